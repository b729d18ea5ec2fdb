"""LabeledFewShot: the shared optimizer contract plus its own behaviour."""

from __future__ import annotations

import honing as hn
import pytest
from honing.testing.contract import ContractClassify, OptimizerContract, contract_examples, intent_match
from honing.testing.fake import FakeLM, nearest_demo_responder
from honing_labeled import LabeledFewShot


class TestLabeledFewShotContract(OptimizerContract):
    optimizer_name = "LabeledFewShot"

    def make_optimizer(self, **overrides):
        return LabeledFewShot(**{"k": 4, "seed": 0, **overrides})


def test_k_demos_per_predictor_copied_not_aliased():
    trainset = contract_examples()
    compiled = LabeledFewShot(k=5, seed=1).compile(hn.Predict(ContractClassify), trainset=trainset)
    demos = compiled.predictors()[0].demos
    assert len(demos) == 5
    assert all(set(d) == {"text", "intent", "_source", "_example"} for d in demos)
    assert all({"text": d["text"], "intent": d["intent"]} == dict(trainset[d["_example"]]) for d in demos)
    demos[0]["intent"] = "changed"
    assert all(e.intent != "changed" for e in trainset)


def test_seed_changes_the_sample_and_sample_false_takes_the_first_k():
    trainset = contract_examples()
    a = LabeledFewShot(k=4, seed=0).compile(hn.Predict(ContractClassify), trainset=trainset).predictors()[0].demos
    b = LabeledFewShot(k=4, seed=1).compile(hn.Predict(ContractClassify), trainset=trainset).predictors()[0].demos
    assert a != b
    first = LabeledFewShot(k=3, sample=False).compile(hn.Predict(ContractClassify), trainset=trainset)
    assert [d["_example"] for d in first.predictors()[0].demos] == [0, 1, 2]


def test_k_larger_than_trainset_uses_all_and_says_so():
    trainset = contract_examples()[:3]
    compiled = LabeledFewShot(k=10).compile(hn.Predict(ContractClassify), trainset=trainset)
    assert len(compiled.predictors()[0].demos) == 3
    assert any("only 3 usable" in note for note in compiled.compile_record.notes)


def test_demos_improve_a_model_that_learns_from_them():
    trainset = contract_examples()
    devset = [hn.Example(text="my card has not arrived yet", intent="card_arrival").with_inputs("text"),
              hn.Example(text="what is the exchange rate today", intent="exchange_rate").with_inputs("text"),
              hn.Example(text="my pin got blocked", intent="pin_blocked").with_inputs("text")]
    evaluate = hn.Evaluate(devset=devset, metric=intent_match)
    with hn.context(lm=FakeLM(responder=nearest_demo_responder("Text", "Intent"))):
        zero_shot = evaluate(hn.Predict(ContractClassify)).score
        compiled = evaluate(LabeledFewShot(k=12).compile(hn.Predict(ContractClassify), trainset=trainset)).score
    assert zero_shot == 0.0
    assert compiled == 1.0


def test_negative_k_is_rejected():
    with pytest.raises(hn.OptimizerError, match="k must be"):
        LabeledFewShot(k=-1)


def test_k_none_takes_every_demo_that_fits_the_context():
    trainset = contract_examples()
    with hn.context(lm=FakeLM(scoring=True, context_window=100_000)):
        everything = LabeledFewShot(k=None).compile(hn.Predict(ContractClassify), trainset=trainset)
    assert len(everything.predictors()[0].demos) == len(trainset)
    assert everything.compile_record.notes == ()
    with hn.context(lm=FakeLM(scoring=True, context_window=300)):
        capped = LabeledFewShot(k=None).compile(hn.Predict(ContractClassify), trainset=trainset)
    kept = len(capped.predictors()[0].demos)
    assert 0 < kept < len(trainset)
    assert any(f"{kept} of {len(trainset)} usable training examples fit" in n for n in capped.compile_record.notes)


@pytest.mark.local_lm
def test_k_none_on_the_embedded_model(local_lm):
    """The embedded model's 8k context holds the whole contract trainset: all of it is used."""
    with hn.context(lm=local_lm):
        compiled = LabeledFewShot(k=None).compile(hn.Predict(ContractClassify), trainset=contract_examples())
        score = hn.Evaluate(devset=contract_examples(), metric=intent_match)(compiled).score
    assert len(compiled.predictors()[0].demos) == len(contract_examples())
    assert score >= 0.5
