"""Saving and loading programs as versioned, human-readable JSON. No pickle: loading never runs code.

A saved program holds, per predictor (by dotted name): its signature (fields, types, instruction), its
demos, its LM settings without secrets and its decoding; plus the optimizer's record and any extra state
of modules (e.g. a KNN index's examples). `load` checks the file against the program's shape and names
the predictor and field that differ; every malformed value is reported with its JSON path
(``$.predictors[0].demos[3]``). Older `schema_version`s are migrated dict-to-dict before structuring.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import cattrs

from honing._version import __version__
from honing.errors import ConfigurationError, LoadError
from honing.lm.client import LM
from honing.jsontext import json_safe, nesting_depth
from honing.record import OptimizerRecord
from honing.signatures import Field, make_signature, type_from_str, type_to_str

SCHEMA_VERSION = 1
#: JSON nested deeper than this is refused before parsing (a hostile file must not exhaust the stack).
MAX_DEPTH = 200


@attrs.frozen
class FieldState:
    name: str
    role: str
    type: str
    desc: str = ""
    prefix: str = ""


@attrs.frozen
class SignatureState:
    name: str
    instructions: str
    fields: tuple[FieldState, ...]


@attrs.frozen
class PredictorState:
    name: str
    signature: SignatureState
    demos: tuple[dict[str, Any], ...] = ()
    lm: dict[str, Any] | None = None
    decoding: str = "auto"
    decoding_used: dict[str, str] = attrs.Factory(dict)
    adapter: str | None = None


@attrs.frozen
class ProgramDocument:
    schema_version: int
    honing_version: str
    program: str
    predictors: tuple[PredictorState, ...]
    extra_state: dict[str, dict[str, Any]] = attrs.Factory(dict)
    optimizer: OptimizerRecord | None = None


def make_converter() -> cattrs.Converter:
    """The one converter for honing's documents and plugins' saved state: extra keys refused, scalars
    of exactly their type. (Plugins' extra state is plain JSON data, so no plugin hook extends it.)"""
    converter = cattrs.Converter(forbid_extra_keys=True)
    _register_strict_scalars(converter)
    return converter


def _register_strict_scalars(converter: cattrs.Converter) -> None:
    """cattrs would turn "3" into 3 or 1 into True; a saved file with the wrong type is an error instead."""

    def exact(kind: type) -> Callable[[Any, Any], Any]:
        def structure(value: Any, _: Any) -> Any:
            if type(value) is not kind and not (kind is float and type(value) is int):
                raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
            return float(value) if kind is float else value
        return structure

    for kind in (str, int, float, bool):
        converter.register_structure_hook(kind, exact(kind))


# ----------------------------------------------------------------------------------------------------
# save

def program_document(program: Any) -> ProgramDocument:
    predictors = []
    for name, predictor in program.named_predictors():
        sig = predictor.signature
        fields = tuple(FieldState(f.name, f.role, type_to_str(f.annotation), f.desc, f.prefix) for f in sig.fields)
        lm_state = predictor.lm.to_state() if predictor.lm is not None and hasattr(predictor.lm, "to_state") else None
        adapter = predictor.adapter if isinstance(predictor.adapter, str) else getattr(predictor.adapter, "name", None)
        predictors.append(PredictorState(
            name=name,
            signature=SignatureState(sig.__name__, sig.instructions, fields),
            demos=tuple(json_safe(dict(d)) for d in predictor.demos),
            lm=lm_state,
            decoding=predictor.decoding,
            decoding_used=dict(getattr(predictor, "decoding_used", {})),
            adapter=adapter,
        ))
    extra = {path: module.extra_state() for path, module in program.named_submodules() if module.extra_state()}
    return ProgramDocument(SCHEMA_VERSION, __version__, type(program).__name__, tuple(predictors), extra,
                           program.compile_record)


def dumps_program(program: Any) -> str:
    converter = make_converter()
    raw = converter.unstructure(program_document(program))
    return json.dumps(raw, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def save_program(program: Any, path: str | os.PathLike[str]) -> None:
    """Write atomically (a temp file renamed over the target), so a crash never leaves half a file."""
    text = dumps_program(program)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------------
# load

def _migrate_0_to_1(raw: dict[str, Any]) -> dict[str, Any]:
    """Pre-release files kept predictors in an object keyed by name."""
    out = dict(raw)
    preds = out.get("predictors")
    if isinstance(preds, dict):
        out["predictors"] = [{"name": name, **state} for name, state in preds.items()]
    out["schema_version"] = 1
    return out


#: schema_version → function upgrading a raw document by one version.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _migrate_0_to_1}


def read_document(path: str | os.PathLike[str], converter: cattrs.Converter | None = None) -> ProgramDocument:
    """Parse, migrate and structure a saved file; every problem is a LoadError with file and JSON path."""
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise LoadError("no such file", file=file) from None
    except OSError as exc:
        raise LoadError(f"cannot read: {exc.strerror}", file=file) from None
    return parse_document(data, file=file, converter=converter)


def parse_document(data: bytes | str, *, file: str | None = None,
                   converter: cattrs.Converter | None = None) -> ProgramDocument:
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise LoadError(f"not UTF-8 text (byte {exc.start})", file=file) from None
    if nesting_depth(text) > MAX_DEPTH:
        raise LoadError(f"JSON nested deeper than {MAX_DEPTH} levels", file=file, path="$")
    try:
        raw = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        hint = " (the file looks truncated)" if exc.pos >= len(text.rstrip()) - 1 else ""
        raise LoadError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{hint}", file=file) from None
    except (ValueError, RecursionError) as exc:
        raise LoadError(f"not valid JSON: {exc}", file=file) from None
    if not isinstance(raw, dict):
        raise LoadError(f"expected a JSON object at the top, got {_json_type(raw)}", file=file, path="$")
    version = raw.get("schema_version")
    if type(version) is not int:
        raise LoadError("missing or non-integer schema_version: not a honing program file", file=file,
                        path="$.schema_version")
    if version > SCHEMA_VERSION:
        raise LoadError(f"saved with schema_version {version}, newer than this honing reads ({SCHEMA_VERSION}); "
                        "upgrade honing", file=file, path="$.schema_version")
    if version < 0 or (version < SCHEMA_VERSION and version not in MIGRATIONS):
        raise LoadError(f"unknown schema_version {version}", file=file, path="$.schema_version")
    while raw["schema_version"] < SCHEMA_VERSION:
        raw = MIGRATIONS[raw["schema_version"]](raw)
    converter = converter or make_converter()
    try:
        return converter.structure(raw, ProgramDocument)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        message, path = _first_error(exc)
        raise LoadError(message, file=file, path=path) from None


def structure_state(raw: Any, cls: type, *, path: str = "$", file: str | None = None) -> Any:
    """A plugin's saved state (e.g. a module's `extra_state`) as its attrs class `cls`, structured by the
    core's converter: attrs validators and exact scalar types decide, and any problem is a LoadError
    naming the JSON path under `path`."""
    try:
        return make_converter().structure(raw, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        message, where = _first_error(exc)
        where = path + where[1:] if where and where.startswith("$") else path
        raise LoadError(message, file=file, path=where) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


_PATH = re.compile(r"^(?P<msg>.*?) @ (?P<path>\$.*)$")


def _first_error(exc: BaseException) -> tuple[str, str | None]:
    if isinstance(exc, cattrs.BaseValidationError):
        messages = cattrs.transform_error(exc, path="$")
        if messages:
            m = _PATH.match(messages[0])
            if m:
                more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
                return m.group("msg") + more, m.group("path")
            return messages[0], None
    return str(exc), None


def check_shape(program: Any, doc: ProgramDocument, *, file: str | None = None) -> None:
    """The saved predictors and fields must be exactly the program's (names, roles and types)."""
    have = dict(program.named_predictors())
    saved = [p.name for p in doc.predictors]
    missing = [n for n in have if n not in saved]
    extra = [n for n in saved if n not in have]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the program has predictor(s) {', '.join(map(repr, missing))} that the file lacks")
        if extra:
            parts.append(f"the file has predictor(s) {', '.join(map(repr, extra))} that the program lacks")
        raise LoadError("file was saved from a different program: " + "; ".join(parts), file=file, path="$.predictors")
    for i, state in enumerate(doc.predictors):
        signature = have[state.name].signature
        ours = {f.name: f for f in signature.fields}
        theirs = {f.name: f for f in state.signature.fields}
        for name in [*ours, *(n for n in theirs if n not in ours)]:
            path = f"$.predictors[{i}].signature.fields"
            if name not in theirs:
                raise LoadError(f"predictor {state.name!r}: the program has field {name!r} that the file lacks",
                                file=file, path=path)
            if name not in ours:
                raise LoadError(f"predictor {state.name!r}: the file has field {name!r} that the program lacks",
                                file=file, path=path)
            mine: Field = ours[name]
            if (mine.role, type_to_str(mine.annotation)) != (theirs[name].role, theirs[name].type):
                raise LoadError(
                    f"predictor {state.name!r}, field {name!r}: the file has {theirs[name].role} "
                    f"{theirs[name].type}, the program has {mine.role} {type_to_str(mine.annotation)}",
                    file=file, path=path)
        if state.decoding not in ("auto", "generate", "grammar", "score", "calibrated"):
            raise LoadError(f"unknown decoding {state.decoding!r}", file=file, path=f"$.predictors[{i}].decoding")


#: LM settings a file may set. Anything else (an endpoint, headers, a provider override) could send
#: the user's API key somewhere else, so it is refused unless the caller passes allow_endpoints=True.
TRUSTED_LM_KEYS = {"model", "temperature", "max_tokens", "num_retries", "cache", "timeout", "history_size", "kwargs"}
TRUSTED_LM_KWARGS = {"top_p", "seed", "n", "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs",
                     "reasoning_effort", "retry_base", "retry_cap", "max_retry_after"}


def check_lm_state(state: dict[str, Any], *, path: str, file: str | None, allow_endpoints: bool) -> None:
    if allow_endpoints:
        return
    untrusted = sorted(set(state) - TRUSTED_LM_KEYS)
    kwargs = state.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise LoadError("LM kwargs must be an object", file=file, path=f"{path}.kwargs")
    untrusted += sorted(f"kwargs.{k}" for k in set(kwargs) - TRUSTED_LM_KWARGS)
    if untrusted:
        raise LoadError(f"the file sets LM {', '.join(untrusted)}, which could send your API key elsewhere; "
                        "load(path, allow_endpoints=True) if you trust this file", file=file, path=path)


def check_local_model(model: str, *, file: str | None, path: str) -> None:
    """A program that runs on a local GGUF (e.g. one a fine-tune wrote) cannot run on a machine without
    that file: say so when it is loaded, naming the file, rather than at its first call. Built-in models
    come from installed packages and are checked when first used."""
    from honing.lm.local import BUILTIN_MODELS, local_model_name, resolve_model_path

    if not model.startswith("local/") or local_model_name(model).lower() in BUILTIN_MODELS:
        return
    try:
        resolve_model_path(model)
    except ConfigurationError as exc:
        raise LoadError(f"the program's model is not on this machine: {exc}", file=file, path=path) from None


def load_program(program: Any, path: str | os.PathLike[str], *, allow_endpoints: bool = False) -> None:
    """Load a saved file into `program`. All-or-nothing: on any error the program is unchanged."""
    file = str(path)
    doc = read_document(path)
    apply_document(program, doc, file=file, base_path=str(Path(path).resolve().parent),
                   allow_endpoints=allow_endpoints)


def apply_document(program: Any, doc: ProgramDocument, *, file: str | None = None,
                   base_path: str | None = None, allow_endpoints: bool = False) -> None:
    check_shape(program, doc, file=file)
    predictors = dict(program.named_predictors())
    staged = []
    for i, state in enumerate(doc.predictors):
        predictor = predictors[state.name]
        lm = None
        if state.lm is not None:
            check_lm_state(state.lm, path=f"$.predictors[{i}].lm", file=file, allow_endpoints=allow_endpoints)
            try:
                lm = LM.from_state(state.lm)
            except Exception as exc:  # noqa: BLE001 - any bad LM state is the file's problem
                raise LoadError(f"bad LM settings: {exc}", file=file, path=f"$.predictors[{i}].lm") from None
            check_local_model(lm.model, file=file, path=f"$.predictors[{i}].lm.model")
        descs = {f.name: (f.desc, f.prefix) for f in state.signature.fields}
        fields = [attrs.evolve(f, desc=descs[f.name][0], prefix=descs[f.name][1] or f.prefix)
                  for f in predictor.signature.fields]
        signature = predictor.signature.with_fields(fields, instructions=state.signature.instructions)
        staged.append((predictor, signature, [dict(d) for d in state.demos], lm, state))
    modules = dict(program.named_submodules())
    for path in doc.extra_state:
        if path not in modules:
            raise LoadError(f"extra state for module {path!r}, which the program lacks", file=file,
                            path=f"$.extra_state.{path}")
    for predictor, signature, demos, lm, state in staged:
        predictor.signature = signature
        predictor.demos = demos
        if lm is not None:
            predictor.lm = lm
        predictor.decoding = state.decoding
        predictor.decoding_used = dict(state.decoding_used)
        if state.adapter is not None:
            predictor.adapter = state.adapter
    for path, state in doc.extra_state.items():
        modules[path].load_extra_state(state, base_path=base_path)
    program.compile_record = doc.optimizer


def signature_from_state(state: SignatureState) -> Any:
    """Rebuild a signature from its saved form (types parsed by honing's own parser, never eval'd)."""
    fields = [Field(f.name, f.role, type_from_str(f.type), f.desc, f.prefix) for f in state.fields]
    return make_signature(fields, instructions=state.instructions, name=state.name)
