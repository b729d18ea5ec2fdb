"""The foundation on the real embedded model (SmolLM2-135M through llama.cpp): typed answers, outputs
constrained to valid values, and a LabeledFewShot compile that beats zero-shot on Banking77."""

from __future__ import annotations

import json
import random
import typing
from pathlib import Path

import pytest

import honing as hn
from honing.optimizers import LabeledFewShot

pytestmark = pytest.mark.local_lm

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "banking77" / "sample.jsonl"
INTENTS = tuple(json.loads((SAMPLE.parent / "intents.json").read_text()))


class Classify(hn.Signature):
    """Classify the banking customer query into one intent."""

    text: str = hn.InputField()
    intent: typing.Literal[INTENTS] = hn.OutputField()  # type: ignore[valid-type]


def banking_split(n_train_per_intent: int, n_dev_per_intent: int) -> tuple[list[hn.Example], list[hn.Example]]:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    rng = random.Random(7)
    train, dev = [], []
    for intent in INTENTS:
        group = [r for r in rows if r["intent"] == intent]
        rng.shuffle(group)
        train += group[:n_train_per_intent]
        dev += group[n_train_per_intent:n_train_per_intent + n_dev_per_intent]
    make = lambda rs: [hn.Example(**r).with_inputs("text") for r in rs]  # noqa: E731
    return make(train), make(dev)


def test_typed_int_answer(local_lm):
    with hn.context(lm=local_lm):
        prediction = hn.Predict("a: int, b: int -> sum: int")(a=3, b=5)
    assert isinstance(prediction.sum, int)
    assert prediction.meta["decoding"] == {"sum": "grammar"}
    assert local_lm.provider == "local"


def test_literal_output_is_always_a_valid_choice_with_every_decoding(local_lm):
    texts = ["I still have not received my card", "What rate do you use for euros?", "My PIN is blocked"]
    for decoding in ("grammar", "score", "calibrated"):
        program = hn.Predict(Classify, decoding=decoding)
        with hn.context(lm=local_lm):
            for text in texts:
                prediction = program(text=text)
                assert prediction.intent in INTENTS
                assert prediction.meta["decoding"] == {"intent": decoding}


def test_chain_of_thought_gives_reasoning_then_a_valid_intent(local_lm):
    with hn.context(lm=local_lm):
        prediction = hn.ChainOfThought(Classify)(text="Someone stole my card yesterday")
    assert isinstance(prediction.reasoning, str) and prediction.reasoning
    assert prediction.intent in INTENTS


def test_labeled_few_shot_beats_zero_shot_on_banking77(local_lm, tmp_path):
    # Grammar decoding: the plain-decoding setting in which the measured facts say demos help most
    # (zero-shot 0.235 -> 0.58 with 60 demos on held-out Banking77-10).
    train, dev = banking_split(n_train_per_intent=3, n_dev_per_intent=2)
    metric = lambda e, p, trace=None: e.intent == p.intent  # noqa: E731
    evaluate = hn.Evaluate(devset=dev, metric=metric)
    with hn.context(lm=local_lm):
        zero_shot = evaluate(hn.Predict(Classify, decoding="grammar"))
        compiled = LabeledFewShot(k=30, seed=0).compile(hn.Predict(Classify, decoding="grammar"), trainset=train)
        few_shot = evaluate(compiled)
    assert few_shot.n_errors == 0
    assert few_shot.score >= zero_shot.score + 0.1, (zero_shot.score, few_shot.score)
    assert few_shot.usage.reused_prompt_tokens > few_shot.usage.prompt_tokens / 2, "demos prefix reused"
    compiled.save(tmp_path / "c.json")
    fresh = hn.Predict(Classify).load(tmp_path / "c.json")
    with hn.context(lm=local_lm):
        assert [fresh(**e.inputs()).intent for e in dev[:5]] == [compiled(**e.inputs()).intent for e in dev[:5]]
