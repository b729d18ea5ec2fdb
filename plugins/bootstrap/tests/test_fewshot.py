"""BootstrapFewShot: the shared optimizer contract plus its own behaviour."""

from __future__ import annotations

import json
from typing import Any

import honing as hn
import pytest
from bootstrap_helpers import BudgetAfter, OnlyFirst, TopicThenIntent, Twice, contract_lm, fake_lm
from honing.errors import BudgetExceeded, OptimizerError, TooManyErrors
from honing.optimizers.kit.demos import predictor_rng
from honing.runs import RunDirError
from honing.testing.contract import ContractClassify, OptimizerContract, intent_match
from honing.testing.fake import FakeLM, nearest_demo_responder
from honing_bootstrap import BootstrapFewShot


class TestBootstrapFewShotContract(OptimizerContract):
    optimizer_name = "BootstrapFewShot"

    def make_lm(self) -> Any:
        return contract_lm()

    def make_optimizer(self, **overrides: Any) -> BootstrapFewShot:
        return BootstrapFewShot(**{"metric": intent_match, "max_bootstrapped_demos": 2, "max_labeled_demos": 4,
                                   "seed": 0, **overrides})


def keys(demos: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(d["_source"], d["_example"]) for d in demos]


def test_bootstrapped_demos_first_then_labelled_not_already_used(lm, trainset):
    compiled = BootstrapFewShot(intent_match, max_bootstrapped_demos=3, max_labeled_demos=6).compile(
        hn.Predict(ContractClassify), trainset=trainset)
    demos = compiled.predictors()[0].demos
    sources = [d["_source"] for d in demos]
    assert sources == ["bootstrap"] * 3 + ["labeled"] * 3
    booted = {d["_example"] for d in demos[:3]}
    assert not booted & {d["_example"] for d in demos[3:]}
    for d in demos[:3]:  # a bootstrapped demo is the teacher's own (passing) output for that example
        assert d["intent"] == trainset[d["_example"]].intent and d["text"] == trainset[d["_example"]].text


def test_each_predictor_samples_the_whole_remaining_pool_with_its_own_rng(lm, trainset):
    """DSPy defect 3: a later predictor sampled from the previous predictor's sample."""
    optimizer = BootstrapFewShot(intent_match, max_bootstrapped_demos=0, max_labeled_demos=5, seed=7)
    both = optimizer.compile(Twice(), trainset=trainset)
    first, second = (p.demos for p in both.predictors())
    assert len(first) == len(second) == 5
    assert {d["_example"] for d in first} != {d["_example"] for d in second}
    # the first predictor's demos do not depend on whether a second predictor exists
    alone = optimizer.compile(OnlyFirst(), trainset=trainset).predictors()[0].demos
    assert keys(alone) == keys(first)
    expected = predictor_rng(7, "second", "labeled").sample(range(len(trainset)), 5)
    assert [d["_example"] for d in second] == expected


def test_more_bootstrapped_demos_asked_than_possible_fills_and_says_so(trainset):
    # a model that only ever answers card_arrival passes on 4 of 12 examples
    with hn.context(lm=FakeLM(responder=lambda r: {c: (0.0 if "card_arrival" in c else -5.0) for c in r.choices},
                              scoring=True)):
        compiled = BootstrapFewShot(intent_match, max_bootstrapped_demos=8, max_labeled_demos=10).compile(
            hn.Predict(ContractClassify), trainset=trainset)
    demos = compiled.predictors()[0].demos
    assert [d["_source"] for d in demos].count("bootstrap") == 4
    assert len(demos) == 10
    notes = compiled.compile_record.notes
    assert any("bootstrapped 4 of max_bootstrapped_demos=8" in n and "8 failed the metric" in n for n in notes)


def test_metric_threshold_zero_is_a_real_threshold(lm, trainset):
    """DSPy defect 2: a threshold of 0 acted like no threshold."""
    always_zero = lambda example, prediction, trace=None: 0.0
    with_threshold = BootstrapFewShot(always_zero, metric_threshold=0, max_bootstrapped_demos=2,
                                      max_labeled_demos=2).compile(hn.Predict(ContractClassify), trainset=trainset)
    without = BootstrapFewShot(always_zero, max_bootstrapped_demos=2, max_labeled_demos=2).compile(
        hn.Predict(ContractClassify), trainset=trainset)
    assert [d["_source"] for d in with_threshold.predictors()[0].demos] == ["bootstrap", "bootstrap"]
    assert [d["_source"] for d in without.predictors()[0].demos] == ["labeled", "labeled"]


def test_no_metric_accepts_every_run_that_does_not_fail(lm, trainset):
    compiled = BootstrapFewShot(max_bootstrapped_demos=3, max_labeled_demos=3).compile(
        hn.Predict(ContractClassify), trainset=trainset)
    assert [d["_source"] for d in compiled.predictors()[0].demos] == ["bootstrap"] * 3


def test_every_predictor_of_a_passing_run_gets_a_demo_even_without_labels(lm, trainset):
    compiled = BootstrapFewShot(intent_match, max_bootstrapped_demos=2, max_labeled_demos=4).compile(
        TopicThenIntent(), trainset=trainset)
    topic, classify = compiled.predictors()
    assert [d["_source"] for d in topic.demos] == ["bootstrap", "bootstrap"]  # no labelled pool for "topic"
    assert set(topic.demos[0]) == {"text", "topic", "_source", "_example"}
    # one passing run gives every stage its demo: the same training examples, stage by stage
    assert [d["_example"] for d in topic.demos] == [d["_example"] for d in classify.demos[:2]]
    assert [d["_source"] for d in classify.demos] == ["bootstrap", "bootstrap", "labeled", "labeled"]


def test_a_teacher_program_is_used_and_left_untouched(trainset):
    student_lm, teacher_lm = fake_lm(), fake_lm(model="fake/teacher")
    teacher = hn.Predict(ContractClassify, lm=teacher_lm)
    teacher.demos = [{"text": e.text, "intent": e.intent} for e in trainset]
    before = [dict(d) for d in teacher.demos]
    with hn.context(lm=student_lm):
        compiled = BootstrapFewShot(intent_match, max_bootstrapped_demos=4, max_labeled_demos=4).compile(
            hn.Predict(ContractClassify), trainset=trainset, teacher=teacher)
    assert teacher_lm.requests and not student_lm.requests
    assert teacher.demos == before
    assert [d["_source"] for d in compiled.predictors()[0].demos] == ["bootstrap"] * 4


def test_teacher_settings_give_the_teacher_another_lm(trainset):
    student_lm, teacher_lm = fake_lm(), fake_lm(model="fake/teacher")
    with hn.context(lm=student_lm):
        BootstrapFewShot(intent_match, max_bootstrapped_demos=2, teacher_settings={"lm": teacher_lm}).compile(
            hn.Predict(ContractClassify), trainset=trainset)
    assert teacher_lm.requests and not student_lm.requests


def test_unknown_teacher_setting_is_named():
    with pytest.raises(OptimizerError, match="unknown teacher_settings 'model'"):
        BootstrapFewShot(intent_match, teacher_settings={"model": "x"})


def test_a_teacher_of_another_shape_is_a_clear_error(lm, trainset):
    with pytest.raises(OptimizerError, match=r"teacher has predictors \['first', 'second'\]"):
        BootstrapFewShot(intent_match).compile(hn.Predict(ContractClassify), trainset=trainset, teacher=Twice())


def test_label_less_trainset_is_a_clear_error(lm):
    unlabeled = [hn.Example(text="where is my card").with_inputs("text")]
    with pytest.raises(OptimizerError, match=r"trainset\[0\] has no labels"):
        BootstrapFewShot(intent_match).compile(hn.Predict(ContractClassify), trainset=unlabeled)


def test_a_metric_that_raises_is_counted_until_max_errors(lm, trainset):
    def flaky(example, prediction, trace=None):
        if "pin" in example.text:
            raise ValueError("metric broke")
        return example.intent == prediction.intent

    compiled = BootstrapFewShot(flaky, max_bootstrapped_demos=12, max_labeled_demos=12).compile(
        hn.Predict(ContractClassify), trainset=trainset)
    assert compiled.compile_record.errors == 4  # the four pin examples; the compile went on
    with pytest.raises(TooManyErrors, match="max_errors=3") as info:
        BootstrapFewShot(flaky, max_bootstrapped_demos=12, max_errors=3).compile(
            hn.Predict(ContractClassify), trainset=trainset)
    assert info.value.partial.used  # what was bootstrapped before is carried


def test_configured_max_errors_applies_when_none_given(lm, trainset):
    def broken(example, prediction, trace=None):
        raise ValueError("always")

    with hn.context(max_errors=1), pytest.raises(TooManyErrors, match="max_errors=1"):
        BootstrapFewShot(broken).compile(hn.Predict(ContractClassify), trainset=trainset)


def test_later_rounds_ask_for_a_fresh_sample(trainset):
    """With max_rounds=2 a failure is retried with a sampling temperature and a new rollout id."""
    seen: list[Any] = []

    def responder(request):
        seen.append((request.temperature, request.rollout))
        return "card_arrival" if request.rollout else "unknown"

    with hn.context(lm=FakeLM(responder=responder)):
        compiled = BootstrapFewShot(intent_match, max_bootstrapped_demos=1, max_rounds=2, max_labeled_demos=1).compile(
            hn.Predict(ContractClassify), trainset=trainset)
    assert seen[0][1] is None and seen[1][1] == 1 and seen[1][0] is not None
    assert compiled.predictors()[0].demos[0]["_source"] == "bootstrap"


def test_budget_running_out_keeps_what_was_bootstrapped(trainset):
    with hn.context(lm=FakeLM(responder=BudgetAfter(2))):
        compiled = BootstrapFewShot(intent_match, max_bootstrapped_demos=4, max_labeled_demos=6).compile(
            hn.Predict(ContractClassify), trainset=trainset)
    record = compiled.compile_record
    assert record.budget_limited
    assert [d["_source"] for d in compiled.predictors()[0].demos].count("bootstrap") >= 1
    with hn.context(lm=FakeLM(responder=BudgetAfter(0))), pytest.raises(BudgetExceeded):
        BootstrapFewShot(intent_match).compile(hn.Predict(ContractClassify), trainset=trainset)


def test_bad_parameters_are_named():
    with pytest.raises(OptimizerError, match="max_bootstrapped_demos must be an integer >= 0"):
        BootstrapFewShot(intent_match, max_bootstrapped_demos=-1)
    with pytest.raises(OptimizerError, match="max_rounds must be an integer >= 1"):
        BootstrapFewShot(intent_match, max_rounds=0)
    with pytest.raises(OptimizerError, match="metric_threshold must be a number"):
        BootstrapFewShot(intent_match, metric_threshold="high")


def test_run_dir_logs_the_bootstrap_and_a_resume_reuses_it(tmp_path, trainset):
    run = tmp_path / "run"
    first_lm = fake_lm()
    with hn.context(lm=first_lm):
        first = BootstrapFewShot(intent_match, max_bootstrapped_demos=2).compile(
            hn.Predict(ContractClassify), trainset=trainset, run_dir=run)
    events = [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert events == ["start", "bootstrap", "finish"]
    assert (run / "summary.json").exists()
    with hn.context(lm=fake_lm()), pytest.raises(RunDirError, match="resume=True"):
        BootstrapFewShot(intent_match, max_bootstrapped_demos=2).compile(
            hn.Predict(ContractClassify), trainset=trainset, run_dir=run)
    again_lm = fake_lm()
    with hn.context(lm=again_lm):
        again = BootstrapFewShot(intent_match, max_bootstrapped_demos=2).compile(
            hn.Predict(ContractClassify), trainset=trainset, run_dir=run, resume=True)
    assert not again_lm.requests
    assert again.predictors()[0].demos == first.predictors()[0].demos


def test_resume_without_run_dir_is_an_error(lm, trainset):
    with pytest.raises(OptimizerError, match="resume=True needs run_dir"):
        BootstrapFewShot(intent_match).compile(hn.Predict(ContractClassify), trainset=trainset, resume=True)


def test_nearest_demo_fake_learns_from_bootstrapped_demos(trainset):
    from bootstrap_helpers import devset

    with hn.context(lm=FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)):
        compiled = BootstrapFewShot(intent_match, max_bootstrapped_demos=4, max_labeled_demos=12).compile(
            hn.Predict(ContractClassify), trainset=trainset)
        score = hn.Evaluate(devset=devset(), metric=intent_match)(compiled).score
    assert score == 1.0


def test_defaults_are_the_issue_signature_and_the_searches_allow_more_demos():
    from honing_bootstrap import BootstrapFewShotWithOptuna, BootstrapFewShotWithRandomSearch

    params = BootstrapFewShot().get_params()
    assert (params["max_bootstrapped_demos"], params["max_labeled_demos"], params["max_rounds"]) == (4, 16, 1)
    for search in (BootstrapFewShotWithRandomSearch, BootstrapFewShotWithOptuna):
        # the searches size their candidates by what the context holds (issue 23), not by a fixed cap
        assert search(intent_match).get_params()["max_labeled_demos"] is None
