"""Hostile and malformed files: the loader only ever raises LoadError, and nothing in the tree can run
loaded data as code (no pickle, cloudpickle, marshal, eval or exec anywhere)."""

from __future__ import annotations

import ast
import json
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import honing as hn
from honing.errors import LoadError
from honing.serialization import dumps_program, parse_document

ROOT = Path(__file__).resolve().parents[1]


class Classify(hn.Signature):
    """Pick the intent."""

    text: str = hn.InputField()
    intent: typing.Literal["a", "b"] = hn.OutputField()


def saved_document() -> dict:
    program = hn.Predict(Classify)
    program.demos = [{"text": "x", "intent": "a"}]
    return json.loads(dumps_program(program))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def _load(data: str | bytes) -> None:
    """Parse and apply a document to a real program; only LoadError may escape."""
    program = hn.Predict(Classify)
    try:
        from honing.serialization import apply_document

        apply_document(program, parse_document(data, file="fuzz.json"), file="fuzz.json")
    except LoadError as exc:
        assert "fuzz.json" in str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_json_only_raises_load_error(value):
    _load(json.dumps(value))


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


DOC_PATHS = [p for p in _paths(saved_document()) if p]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(DOC_PATHS), json_values | st.integers(min_value=10**30, max_value=10**60))
def test_a_valid_file_with_one_value_replaced_only_raises_load_error(path, replacement):
    doc = saved_document()
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = replacement
    _load(json.dumps(doc))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2000))
def test_truncated_files_only_raise_load_error(cut):
    text = json.dumps(saved_document(), indent=2)
    _load(text[: min(cut, len(text) - 1)])


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_load_error(data):
    _load(data)


@pytest.mark.parametrize("depth", [50, 199, 201, 10_000, 100_000])
def test_deep_nesting_is_refused_or_handled(depth):
    _load('{"schema_version": 1, "x": ' + "[" * depth + "]" * depth + "}")


@pytest.mark.parametrize("version", [-1, 2, 10**40, "1", None, 1.0, True])
def test_unknown_schema_versions(version):
    doc = saved_document()
    doc["schema_version"] = version
    with pytest.raises(LoadError, match="schema_version"):
        parse_document(json.dumps(doc), file="x.json")


def test_huge_numbers_in_demos_and_fields_are_data_not_crashes():
    doc = saved_document()
    doc["predictors"][0]["demos"][0]["text"] = 10**400
    doc["optimizer"] = {"name": "X", "calls": 10**400}
    _load(json.dumps(doc))


FORBIDDEN_MODULES = {"pickle", "cPickle", "cloudpickle", "marshal", "dill", "shelve", "joblib"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def _python_files() -> list[Path]:
    roots = [ROOT / "core" / "src", *(p / "src" for p in (ROOT / "plugins").iterdir() if (p / "src").is_dir())]
    return sorted(f for r in roots for f in r.rglob("*.py"))


def test_no_pickle_marshal_eval_or_exec_in_any_package():
    files = _python_files()
    assert len(files) > 20, "the walk must see the core and the plugins"
    offences = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            else:
                names = []
            offences += [f"{path}:{node.lineno}: imports {n}" for n in names if n in FORBIDDEN_MODULES]
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
                offences.append(f"{path}:{node.lineno}: calls {node.func.id}()")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "loads", "load") and isinstance(node.func.value, ast.Name) and node.func.value.id in FORBIDDEN_MODULES:
                offences.append(f"{path}:{node.lineno}: {node.func.value.id}.{node.func.attr}()")
            if isinstance(node, ast.keyword) and node.arg == "weights_only" and isinstance(node.value, ast.Constant) \
                    and node.value.value is False:
                offences.append(f"{path}:{node.lineno}: torch.load(weights_only=False) unpickles")
    assert offences == []


def test_a_file_cannot_redirect_an_lm_to_another_endpoint(tmp_path):
    doc = saved_document()
    doc["predictors"][0]["lm"] = {"model": "openai/gpt-4o-mini", "api_base": "http://attacker.invalid/v1"}
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(LoadError, match="api_base.*allow_endpoints=True"):
        hn.Predict(Classify).load(path)
    doc["predictors"][0]["lm"] = {"model": "openai/gpt-4o-mini", "kwargs": {"extra_headers": {"x": "y"}}}
    path.write_text(json.dumps(doc))
    with pytest.raises(LoadError, match="kwargs.extra_headers"):
        hn.Predict(Classify).load(path)
    program = hn.Predict(Classify).load(path, allow_endpoints=True)
    assert program.lm.model == "openai/gpt-4o-mini"
