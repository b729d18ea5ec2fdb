"""The contract every optimizer plugin passes: subclass `OptimizerContract` in the plugin's tests.

    class TestLabeledFewShot(OptimizerContract):
        optimizer_name = "LabeledFewShot"

        def make_optimizer(self, **overrides):
            return LabeledFewShot(**{"k": 4, "seed": 0, **overrides})

It checks seeded determinism, the save/load round trip, that the student is untouched, the registry
entry, the record written into the compiled program, that the hyperparameters are declared once (the
constructor is the Settings class, the optimizer immutable), that one optimizer compiles twice at once
with the same result as one after the other, and the clear errors for bad input. The defaults
use a scripted fake LM that answers like a model learning from its demos; override `make_lm`,
`make_student`, `make_trainset` or `compile` where an optimizer needs something else.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import threading
import typing
from typing import Any

import attrs

import pytest

import honing as hn
from honing.errors import OptimizerError
from honing.serialization import dumps_program
from honing.testing.fake import FakeLM, nearest_demo_responder

Intent = typing.Literal["card_arrival", "exchange_rate", "pin_blocked", "unknown"]


class ContractClassify(hn.Signature):
    """Classify the banking customer query into one intent."""

    text: str = hn.InputField()
    intent: Intent = hn.OutputField()


CONTRACT_DATA = [
    ("where is my new card, it has not arrived", "card_arrival"),
    ("my card still has not arrived after two weeks", "card_arrival"),
    ("how long does card delivery take", "card_arrival"),
    ("when will the card I ordered arrive", "card_arrival"),
    ("what exchange rate do you use for euros", "exchange_rate"),
    ("is the exchange rate good for dollars", "exchange_rate"),
    ("how is the currency exchange rate calculated", "exchange_rate"),
    ("which exchange rate applies to my transfer", "exchange_rate"),
    ("my pin is blocked after three tries", "pin_blocked"),
    ("I entered the wrong pin and it is blocked", "pin_blocked"),
    ("how do I unblock my pin", "pin_blocked"),
    ("pin blocked, what now", "pin_blocked"),
]


def contract_examples() -> list[hn.Example]:
    return [hn.Example(text=t, intent=i).with_inputs("text") for t, i in CONTRACT_DATA]


def intent_match(example: hn.Example, prediction: hn.Prediction, trace: Any = None) -> bool:
    return example.intent == prediction.intent


def normalized_dump(program: hn.Module) -> dict[str, Any]:
    """The saved JSON without timings (which legitimately differ between two identical runs)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("wall_time", "time", "seconds", "started")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(dumps_program(program)))


class OptimizerContract:
    """Shared tests for optimizer plugins. Set `optimizer_name` and implement `make_optimizer`."""

    optimizer_name: str = ""
    #: Whether this optimizer's compile needs the metric (and so the valset) to do anything.
    uses_metric: bool = True

    # -- what a plugin's test class provides or overrides -----------------------------------------------
    def make_optimizer(self, **overrides: Any) -> hn.Optimizer:
        raise NotImplementedError("subclasses return the optimizer under test, with quick settings")

    def make_student(self) -> hn.Module:
        return hn.Predict(ContractClassify)

    def make_trainset(self) -> list[hn.Example]:
        return contract_examples()

    def make_lm(self) -> Any:
        return FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)

    def compile(self, optimizer: hn.Optimizer, student: hn.Module, trainset: list[hn.Example]) -> hn.Module:
        return optimizer.compile(student, trainset=trainset, valset=trainset)

    # -- fixtures -----------------------------------------------------------------------------------
    @pytest.fixture(autouse=True)
    def _contract_env(self, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
        monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path / "cache"))
        with hn.context(lm=self.make_lm()):
            yield

    # -- the contract -------------------------------------------------------------------------------
    def test_registry_entry(self) -> None:
        from honing.plugins.registry import optimizer_registry

        entry = optimizer_registry().get(self.optimizer_name)
        assert entry.obj is type(self.make_optimizer())
        assert entry.summary, "the optimizer's docstring gives the one-line summary in list-optimizers"
        assert entry.distribution and entry.distribution != "honing", "an optimizer ships in its own distribution"

    def test_seeded_determinism(self) -> None:
        first = self.compile(self.make_optimizer(seed=3), self.make_student(), self.make_trainset())
        second = self.compile(self.make_optimizer(seed=3), self.make_student(), self.make_trainset())
        assert normalized_dump(first) == normalized_dump(second)

    def test_save_load_round_trip(self, tmp_path: Any) -> None:
        compiled = self.compile(self.make_optimizer(), self.make_student(), self.make_trainset())
        path = tmp_path / "compiled.json"
        compiled.save(path)
        fresh = self.make_student()
        fresh.load(path)
        assert normalized_dump(fresh) == normalized_dump(compiled)
        for example in self.make_trainset()[:3]:
            assert fresh(**example.inputs()) == compiled(**example.inputs())

    def test_student_untouched(self) -> None:
        student = self.make_student()
        before = normalized_dump(student)
        compiled = self.compile(self.make_optimizer(), student, self.make_trainset())
        assert normalized_dump(student) == before
        assert compiled is not student
        shared = {id(p) for p in student.predictors()} & {id(p) for p in compiled.predictors()}
        assert not shared, "the compiled program must not share predictor objects with the student"

    def test_record_written(self) -> None:
        compiled = self.compile(self.make_optimizer(), self.make_student(), self.make_trainset())
        record = compiled.compile_record
        assert record is not None and record.name == self.optimizer_name
        assert record.seed is not None
        assert record.wall_time >= 0

    def test_empty_trainset_is_a_clear_error(self) -> None:
        with pytest.raises(OptimizerError, match="trainset is empty"):
            self.compile(self.make_optimizer(), self.make_student(), [])

    def test_example_missing_input_field_is_named(self) -> None:
        trainset = self.make_trainset()
        trainset[2] = hn.Example(question="no text here", intent="pin_blocked").with_inputs("question")
        with pytest.raises(OptimizerError, match=r"trainset\[2\]"):
            self.compile(self.make_optimizer(), self.make_student(), trainset)

    def test_metric_not_callable_is_a_clear_error(self) -> None:
        with pytest.raises(OptimizerError, match="metric must be callable"):
            self.make_optimizer(metric=42)

    def test_hyperparameters_are_declared_once(self) -> None:
        optimizer = self.make_optimizer()
        settings_class = type(optimizer).Settings
        assert attrs.has(settings_class) and type(optimizer.settings) is settings_class
        assert "__init__" not in type(optimizer).__dict__ or type(optimizer).__init__.__qualname__.endswith(
            f"{type(optimizer).__name__}.__init__"), "the constructor is generated from Settings"
        fields = [f.name for f in attrs.fields(settings_class)]
        assert set(inspect.signature(type(optimizer)).parameters) == set(fields)
        assert set(optimizer.get_params()) == set(fields)
        assert set(optimizer.record_parameters()) <= set(fields) - {"metric"}
        json.dumps(optimizer.record_parameters())  # JSON-safe
        with pytest.raises(AttributeError, match="immutable"):
            optimizer.seed = 5  # type: ignore[misc]

    def test_one_optimizer_compiles_twice_at_once(self) -> None:
        """Per-compile state lives on the run: two concurrent compiles of one optimizer object give what
        two compiles one after the other give."""
        optimizer = self.make_optimizer(seed=1)
        expected = normalized_dump(self.compile(optimizer, self.make_student(), self.make_trainset()))
        results: list[Any] = [None, None]
        barrier = threading.Barrier(2)

        def work(i: int) -> None:
            barrier.wait()
            try:
                results[i] = normalized_dump(self.compile(optimizer, self.make_student(), self.make_trainset()))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                results[i] = exc

        threads = [threading.Thread(target=contextvars.copy_context().run, args=(work, i)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert results == [expected, expected]
