"""Save/load: versioned JSON, clear errors with file and JSON path, shape checks, all-or-nothing loads."""

from __future__ import annotations

import json
import typing

import pytest

import honing as hn
from honing.errors import LoadError
from honing.record import OptimizerRecord
from honing.serialization import SCHEMA_VERSION, dumps_program, parse_document


class Classify(hn.Signature):
    """Classify the query."""

    text: str = hn.InputField(desc="the customer's message")
    intent: typing.Literal["card_arrival", "pin_blocked"] = hn.OutputField()


class TwoStep(hn.Module):
    def __init__(self) -> None:
        self.rewrite = hn.Predict("text -> query")
        self.answer = hn.ChainOfThought("query -> answer: int")

    def forward(self, text: str) -> hn.Prediction:
        return self.answer(query=self.rewrite(text=text).query)


def compiled_classifier() -> hn.Predict:
    program = hn.Predict(Classify)
    program.signature = program.signature.with_instructions("Pick the intent.")
    program.demos = [{"text": "where is my card", "intent": "card_arrival", "_source": "labeled"},
                     {"text": "pin is blocked", "intent": "pin_blocked"}]
    program.decoding = "grammar"
    program.compile_record = OptimizerRecord(name="LabeledFewShot", parameters={"k": 2}, seed=0, score=0.5)
    return program


def test_round_trip_restores_instructions_demos_decoding_and_record(tmp_path):
    path = tmp_path / "p.json"
    compiled_classifier().save(path)
    fresh = hn.Predict(Classify).load(path)
    assert fresh.signature.instructions == "Pick the intent."
    assert fresh.demos[0] == {"text": "where is my card", "intent": "card_arrival", "_source": "labeled"}
    assert fresh.decoding == "grammar"
    assert fresh.compile_record == compiled_classifier().compile_record
    assert dumps_program(fresh) == path.read_text()


def test_saved_file_is_readable_versioned_json(tmp_path):
    path = tmp_path / "p.json"
    compiled_classifier().save(path)
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == SCHEMA_VERSION and raw["honing_version"] == hn.__version__
    predictor = raw["predictors"][0]
    assert predictor["name"] == "self"
    assert {"name": "intent", "role": "output", "type": "Literal['card_arrival', 'pin_blocked']", "desc": "",
            "prefix": "Intent"} in predictor["signature"]["fields"]
    assert raw["optimizer"]["name"] == "LabeledFewShot"
    assert path.read_text().startswith("{\n  ")


def test_multi_stage_program_names_and_round_trip(tmp_path):
    program = TwoStep()
    assert [n for n, _ in program.named_predictors()] == ["rewrite", "answer.predict"]
    program.answer.predict.demos = [{"query": "2+2", "reasoning": "add", "answer": 4}]
    program.save(tmp_path / "two.json")
    fresh = TwoStep().load(tmp_path / "two.json")
    assert fresh.answer.predict.demos == [{"query": "2+2", "reasoning": "add", "answer": 4}]


def test_loading_into_a_different_program_names_the_predictor(tmp_path):
    compiled_classifier().save(tmp_path / "p.json")
    with pytest.raises(LoadError, match="different program.*'rewrite', 'answer.predict'.*\\$.predictors"):
        TwoStep().load(tmp_path / "p.json")


def test_loading_with_a_changed_field_type_names_predictor_and_field(tmp_path):
    compiled_classifier().save(tmp_path / "p.json")
    other = hn.Predict("text -> intent: int")
    with pytest.raises(LoadError, match="predictor 'self', field 'intent'.*Literal.*int"):
        other.load(tmp_path / "p.json")
    other = hn.Predict("message -> intent")
    with pytest.raises(LoadError, match="field 'message' that the file lacks"):
        other.load(tmp_path / "p.json")


@pytest.mark.parametrize(
    ("mutate", "message", "path"),
    [
        (lambda d: d["predictors"][0]["demos"].append(7), "expected", "$.predictors[0].demos[2]"),
        (lambda d: d["predictors"][0].update(name=3), "expected str", "$.predictors[0].name"),
        (lambda d: d["predictors"][0]["signature"].pop("instructions"), "required field missing",
         "$.predictors[0].signature.instructions"),
        (lambda d: d.update(schema_version=99), "newer than this honing reads", "$.schema_version"),
        (lambda d: d.update(schema_version="1"), "schema_version", "$.schema_version"),
        (lambda d: d["optimizer"].update(calls="many"), "expected int", "$.optimizer.calls"),
        (lambda d: d.update(surprise=1), "extra fields", None),
    ],
)
def test_malformed_values_are_reported_with_their_json_path(tmp_path, mutate, message, path):
    good = tmp_path / "p.json"
    compiled_classifier().save(good)
    raw = json.loads(good.read_text())
    mutate(raw)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(LoadError) as info:
        hn.Predict(Classify).load(bad)
    assert message in str(info.value)
    assert str(bad) in str(info.value)
    if path is not None:
        assert info.value.path == path


def test_truncated_and_non_json_files(tmp_path):
    good = tmp_path / "p.json"
    compiled_classifier().save(good)
    truncated = tmp_path / "t.json"
    truncated.write_text(good.read_text()[:150])
    with pytest.raises(LoadError, match="truncated"):
        hn.Predict(Classify).load(truncated)
    binary = tmp_path / "b.json"
    binary.write_bytes(b"\x80\x81\x82")
    with pytest.raises(LoadError, match="not UTF-8"):
        hn.Predict(Classify).load(binary)
    with pytest.raises(LoadError, match="no such file"):
        hn.Predict(Classify).load(tmp_path / "missing.json")
    with pytest.raises(LoadError, match="NaN is not valid JSON"):
        parse_document('{"schema_version": NaN}')
    with pytest.raises(LoadError, match="nested deeper"):
        parse_document("[" * 5000 + "]" * 5000)


def test_failed_load_leaves_the_program_unchanged(tmp_path):
    good = tmp_path / "p.json"
    compiled_classifier().save(good)
    raw = json.loads(good.read_text())
    raw["predictors"][0]["decoding"] = "telepathy"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    program = compiled_classifier()
    before = dumps_program(program)
    with pytest.raises(LoadError, match="unknown decoding"):
        program.load(bad)
    assert dumps_program(program) == before


def test_older_schema_versions_are_migrated(tmp_path):
    good = tmp_path / "p.json"
    compiled_classifier().save(good)
    raw = json.loads(good.read_text())
    raw["schema_version"] = 0
    raw["predictors"] = {p.pop("name"): p for p in raw["predictors"]}
    old = tmp_path / "old.json"
    old.write_text(json.dumps(raw))
    assert hn.Predict(Classify).load(old).demos == compiled_classifier().demos


def test_save_is_atomic_and_never_leaves_half_a_file(tmp_path, monkeypatch):
    path = tmp_path / "p.json"
    compiled_classifier().save(path)
    before = path.read_text()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        hn.Predict(Classify).save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]


def test_the_decoding_a_predictor_used_is_saved(tmp_path):
    from honing.testing.fake import FakeLM

    program = hn.Predict(Classify)
    with hn.context(lm=FakeLM(responder=lambda r: {c: 0.0 for c in r.choices}, scoring=True)):
        program(text="where is my card")
    assert program.decoding_used == {"intent": "calibrated"}
    program.save(tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())["predictors"][0]["decoding_used"] == {"intent": "calibrated"}
    assert hn.Predict(Classify).load(tmp_path / "p.json").decoding_used == {"intent": "calibrated"}


def test_a_program_whose_local_model_file_is_missing_fails_at_load_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HONING_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tuned-abc123.gguf").write_bytes(b"GGUF")  # present: loads
    program = hn.Predict("question -> answer")
    program.lm = hn.LM("local/tuned-abc123")
    program.save(tmp_path / "p.json")
    hn.Predict("question -> answer").load(tmp_path / "p.json")

    (tmp_path / "models" / "tuned-abc123.gguf").unlink()
    fresh = hn.Predict("question -> answer")
    with pytest.raises(LoadError) as info:
        fresh.load(tmp_path / "p.json")
    message = str(info.value)
    assert "tuned-abc123.gguf" in message and "$.predictors[0].lm.model" in message and "p.json" in message
    assert fresh.lm is None, "a failed load leaves the program unchanged"
