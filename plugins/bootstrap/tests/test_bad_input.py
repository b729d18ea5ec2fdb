"""The issue's bad inputs, for each of the three bootstrap optimizers: a clear error naming the place
before anything is spent, or (a metric that raises, too few passing runs) a compile that goes on and
says so."""

from __future__ import annotations

from typing import Any

import honing as hn
import pytest
from bootstrap_helpers import Twice, devset
from honing.errors import OptimizerError
from honing.testing.contract import ContractClassify, intent_match
from honing.testing.fake import FakeLM
from honing_bootstrap import BootstrapFewShot, BootstrapFewShotWithOptuna, BootstrapFewShotWithRandomSearch

SMALL = {"max_bootstrapped_demos": 2, "max_labeled_demos": 4}
OPTIMIZERS = {
    "BootstrapFewShot": lambda **kw: BootstrapFewShot(**{"metric": intent_match, **SMALL, **kw}),
    "BootstrapFewShotWithRandomSearch": lambda **kw: BootstrapFewShotWithRandomSearch(
        **{"metric": intent_match, "num_candidate_programs": 1, "display_progress": False, **SMALL, **kw}),
    "BootstrapFewShotWithOptuna": lambda **kw: BootstrapFewShotWithOptuna(
        **{"metric": intent_match, "num_candidate_programs": 1, "num_trials": 2, "display_progress": False,
           **SMALL, **kw}),
}


@pytest.fixture(params=sorted(OPTIMIZERS))
def make(request: pytest.FixtureRequest) -> Any:
    return OPTIMIZERS[request.param]


def compile_with(optimizer: hn.Optimizer, trainset: list[hn.Example], **kwargs: Any) -> hn.Module:
    return optimizer.compile(hn.Predict(ContractClassify), trainset=trainset, **kwargs)


def test_empty_trainset(make, lm):
    with pytest.raises(OptimizerError, match="trainset is empty"):
        compile_with(make(), [], valset=devset())
    assert not lm.requests


def test_label_less_trainset(make, lm, trainset):
    trainset[5] = hn.Example(text="where is my card").with_inputs("text")
    with pytest.raises(OptimizerError, match=r"trainset\[5\] has no labels"):
        compile_with(make(), trainset, valset=devset())
    assert not lm.requests


def test_valset_without_the_signature_fields(make, lm, trainset):
    valset = devset()
    valset[1] = hn.Example(query="card late", intent="card_arrival").with_inputs("query")
    with pytest.raises(OptimizerError, match=r"valset\[1\] is missing input field\(s\) 'text'"):
        compile_with(make(), trainset, valset=valset)
    assert not lm.requests


def test_teacher_of_another_shape(make, lm, trainset):
    with pytest.raises(OptimizerError, match=r"teacher has predictors \['first', 'second'\], the student has"):
        compile_with(make(), trainset, valset=devset(), teacher=Twice())
    assert not lm.requests


def test_a_metric_that_raises_on_some_examples_is_counted_not_fatal(make, lm, trainset):
    def flaky(example, prediction, trace=None):
        if "card" in example.text:  # the first training examples, and some validation ones
            raise KeyError("no gold label")
        return example.intent == prediction.intent

    compiled = compile_with(make(metric=flaky), trainset, valset=devset())
    assert compiled.compile_record.errors > 0  # counted, and the compile finished


def test_more_bootstrapped_demos_than_can_pass_fills_and_says_so(make, trainset):
    # a model that only answers card_arrival passes on the 4 card examples of 12
    only_cards = FakeLM(responder=lambda r: "card_arrival")
    with hn.context(lm=only_cards):
        compiled = compile_with(make(max_bootstrapped_demos=8, max_labeled_demos=10), trainset, valset=devset())
    assert any("bootstrapped 4 of max_bootstrapped_demos=8" in n for n in compiled.compile_record.notes)
    assert len(compiled.predictors()[0].demos) == 10  # the other slots hold labelled examples
