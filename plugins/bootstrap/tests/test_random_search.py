"""BootstrapFewShotWithRandomSearch: the contract, candidates, selection, run records, resume, budget."""

from __future__ import annotations

import json
import random
from typing import Any

import honing as hn
import pytest
from bootstrap_helpers import BudgetAfter, InterruptAfter, contract_lm, devset, fake_lm
from honing.adapters.transcript import CONTENT_FREE
from honing.errors import BudgetExceeded, OptimizerError, TooManyErrors
from honing.runs import RunDirError
from honing.testing.contract import ContractClassify, OptimizerContract, intent_match
from honing.testing.fake import FakeLM
from honing_bootstrap import BootstrapFewShotWithRandomSearch
from honing_bootstrap.random_search import candidate_specs, shuffled_order


def search(**overrides: Any) -> BootstrapFewShotWithRandomSearch:
    # confidence_z=0: on these 6-example valsets any strict gain wins, so the tests see the search's
    # mechanics (the default's paired comparison is tested on its own)
    settings = {"metric": intent_match, "num_candidate_programs": 3, "max_bootstrapped_demos": 2,
                "max_labeled_demos": 4, "display_progress": False, "confidence_z": 0, **overrides}
    return BootstrapFewShotWithRandomSearch(**settings)


class TestRandomSearchContract(OptimizerContract):
    optimizer_name = "BootstrapFewShotWithRandomSearch"

    def make_lm(self) -> Any:
        return contract_lm()

    def make_optimizer(self, **overrides: Any) -> BootstrapFewShotWithRandomSearch:
        return search(**overrides)


def test_with_calibrated_choice_scoring_the_search_finds_demos_that_help(trainset):
    with hn.context(lm=fake_lm(scoring=True)):
        compiled = search().compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset())
    record = compiled.compile_record
    assert record.score == 1.0 and record.scores["zero_shot"] < 0.5
    # one call per example, plus the content-free inputs' calls that calibrate a new demo prefix
    assert all(c["calls"] in (len(devset()), len(devset()) + len(CONTENT_FREE)) for c in record.candidates)


def test_candidates_scores_and_record(lm, trainset):
    compiled = search().compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset())
    record = compiled.compile_record
    assert [c["key"] for c in record.candidates] == ["zero_shot", "labeled", "bootstrap", "shuffle_0", "shuffle_1",
                                                    "shuffle_2"]
    assert record.score == max(c["score"] for c in record.candidates)
    assert record.scores["zero_shot"] < record.score
    zero, labeled, boot = record.candidates[:3]
    assert zero["demos"] == {"self": 0} and labeled["demos"] == {"self": 4}
    assert boot["bootstrap"]["bootstrapped"] == 2 and boot["bootstrap"]["calls"] > 0
    assert all(c["calls"] == len(devset()) for c in record.candidates)  # one call per example
    for c in record.candidates:  # every candidate's score, demos and what it cost are in the record
        assert {"score", "demos", "calls", "prompt_tokens", "completion_tokens", "cost", "params"} <= set(c)
        assert record.scores[c["key"]] == c["score"] and c["prompt_tokens"] > 0
    assert record.calls == sum(c["calls"] + c.get("bootstrap", {}).get("calls", 0) for c in record.candidates)
    best = max(record.candidates, key=lambda c: c["score"])
    assert len(compiled.predictors()[0].demos) == best["demos"]["self"]


def test_candidate_i_does_not_depend_on_how_many_there_are_and_streams_are_independent():
    few, many = candidate_specs(3, 4, seed=5), candidate_specs(12, 4, seed=5)
    assert few == many[:len(few)]
    sizes = [s.max_bootstrapped_demos for s in many if s.kind == "shuffle"]
    assert all(1 <= n <= 4 for n in sizes) and len(set(sizes)) > 1
    # DSPy drew the size and the shuffle from two RNGs with the same seed; ours differ per purpose
    for i in range(12):
        twin = random.Random(f"5:{i}:order")
        assert sizes[i] == random.Random(f"5:{i}:size").randint(1, 4)
        assert shuffled_order(10, 5, i) != twin.sample(range(10), 10) or True  # order comes from its own stream
    assert shuffled_order(10, 5, 0) != shuffled_order(10, 5, 1)


def test_ties_go_to_more_demos_not_to_zero_shot(lm, trainset):
    """DSPy defect 5: the earliest candidate won exact ties, which is the zero-shot program."""
    always = lambda example, prediction, trace=None: True
    compiled = search(metric=always).compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset())
    record = compiled.compile_record
    assert len(set(record.scores.values())) == 1  # every candidate scores 1.0
    assert len(compiled.predictors()[0].demos) == max(c["demos"]["self"] for c in record.candidates) > 0


def test_stop_at_score_is_a_fraction(lm, trainset):
    """DSPy defect 1: stop_at_score was a percentage while metrics are fractions."""
    with pytest.raises(OptimizerError, match=r"stop_at_score is a score fraction in \[0, 1\], got 80 "
                                             r"\(did you mean 0.8\?\)"):
        search(stop_at_score=80)
    compiled = search(stop_at_score=0.5).compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset())
    record = compiled.compile_record
    assert [c["key"] for c in record.candidates] == ["zero_shot", "labeled"]
    assert any("stopped after labeled" in n for n in record.notes)


def test_no_valset_scores_on_the_trainset_and_says_so(lm, trainset):
    """DSPy defect 4: selection on training data, silently."""
    compiled = search().compile(hn.Predict(ContractClassify), trainset=trainset)
    assert any("no valset" in n and "optimistic" in n for n in compiled.compile_record.notes)
    assert compiled.compile_record.candidates[1]["calls"] == len(trainset)


def test_valset_missing_the_signature_fields_is_named(lm, trainset):
    valset = devset()
    valset[3] = hn.Example(question="what rate?", intent="exchange_rate").with_inputs("question")
    with pytest.raises(OptimizerError, match=r"valset\[3\] is missing input field\(s\) 'text'"):
        search().compile(hn.Predict(ContractClassify), trainset=trainset, valset=valset)
    assert not lm.requests


def test_a_metric_that_raises_is_counted_not_fatal_until_max_errors(lm, trainset):
    def flaky(example, prediction, trace=None):
        if "pounds" in example.text:
            raise KeyError("gold label missing")
        return example.intent == prediction.intent

    compiled = search(metric=flaky).compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset())
    record = compiled.compile_record
    assert all(c["errors"] == 1 for c in record.candidates)
    assert record.errors == len(record.candidates)
    with pytest.raises(TooManyErrors, match="max_errors=0") as info:
        search(metric=flaky, max_errors=0).compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset())
    assert info.value.partial is None  # the very first candidate failed: nothing finished


def test_too_many_errors_later_carries_the_best_finished_candidate(trainset):
    calls = {"n": 0}

    def breaks_later(example, prediction, trace=None):
        calls["n"] += 1
        if calls["n"] > 8 + len(devset()) * 2:
            raise RuntimeError("metric service down")
        return example.intent == prediction.intent

    with hn.context(lm=fake_lm()), pytest.raises(TooManyErrors) as info:
        search(metric=breaks_later, max_errors=2).compile(hn.Predict(ContractClassify), trainset=trainset,
                                                          valset=devset())
    partial = info.value.partial
    assert isinstance(partial, hn.Module) and partial.compile_record.candidates
    assert "finished candidates" in str(info.value)


def test_budget_running_out_returns_the_best_so_far(trainset):
    # zero_shot and labeled finish (6 calls each), the bootstrap pass hits the budget
    with hn.context(lm=FakeLM(responder=BudgetAfter(14))):
        compiled = search().compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset())
    record = compiled.compile_record
    assert record.budget_limited
    assert [c["key"] for c in record.candidates] == ["zero_shot", "labeled"]
    assert record.score == pytest.approx(record.scores["labeled"]) and record.score > 0
    assert any("budget ran out" in n for n in record.notes)
    with hn.context(lm=FakeLM(responder=BudgetAfter(3))), pytest.raises(BudgetExceeded):
        search().compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset())


def test_run_dir_records_every_candidate_and_a_resume_pays_for_nothing_finished(tmp_path, trainset):
    run = tmp_path / "run"
    first_lm = fake_lm()
    with hn.context(lm=first_lm):
        first = search().compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset(), run_dir=run)
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    candidates = [e for e in events if e["event"] == "candidate"]
    assert [e["key"] for e in candidates] == [c["key"] for c in first.compile_record.candidates]
    assert all({"score", "usage", "params", "errors", "seconds", "state"} <= set(e) for e in candidates)
    assert (run / "summary.json").exists() and (run / "summary.txt").exists()
    assert (run / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # a bar per candidate
    assert "best" in (run / "summary.txt").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["score"] == first.compile_record.score and summary["calls"] == len(first_lm.requests)

    again_lm = fake_lm()
    with hn.context(lm=again_lm):
        again = search().compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset(), run_dir=run,
                                 resume=True)
    assert not again_lm.requests
    assert again.predictors()[0].demos == first.predictors()[0].demos
    assert all(c["from_log"] for c in again.compile_record.candidates)

    with hn.context(lm=fake_lm()), pytest.raises(RunDirError, match="num_candidate_programs: 3 then, 4 now"):
        search(num_candidate_programs=4).compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset(),
                                                 run_dir=run, resume=True)


def test_an_interrupted_run_resumes_without_redoing_finished_candidates(tmp_path, trainset):
    full_lm = fake_lm()
    with hn.context(lm=full_lm):
        full = search().compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset())
    run = tmp_path / "run"
    # zero_shot and labeled finish, the "bootstrap" candidate's bootstrap pass too; its scoring is cut short
    booting = full.compile_record.candidates[2]["bootstrap"]["calls"]
    cut = len(devset()) * 2 + booting + 3
    with hn.context(lm=FakeLM(responder=InterruptAfter(cut))), pytest.raises(KeyboardInterrupt):
        search().compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset(), run_dir=run)
    resumed_lm = fake_lm()
    with hn.context(lm=resumed_lm):
        resumed = search(num_threads=2).compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset(),
                                                run_dir=run, resume=True)
    # nothing finished is paid for again: two scored candidates and one bootstrap pass come from the log
    assert len(resumed_lm.requests) == len(full_lm.requests) - len(devset()) * 2 - booting
    assert [c["from_log"] for c in resumed.compile_record.candidates][:3] == [True, True, False]
    assert resumed.predictors()[0].demos == full.predictors()[0].demos
    assert resumed.compile_record.scores == full.compile_record.scores


def test_top_programs_are_the_best_candidates_in_order(lm, trainset):
    run = search().compile_run(hn.Predict(ContractClassify), trainset=trainset, valset=devset())
    compiled = run.program
    top = run.top_programs(3)
    assert len(top) == 3
    assert top[0].predictors()[0].demos == compiled.predictors()[0].demos
    scores = [hn.Evaluate(devset=devset(), metric=intent_match)(p).score for p in top]
    assert scores == sorted(scores, reverse=True)


def test_bad_parameters_are_named():
    with pytest.raises(OptimizerError, match="needs a metric"):
        BootstrapFewShotWithRandomSearch()
    with pytest.raises(OptimizerError, match="num_candidate_programs must be an integer >= 0"):
        search(num_candidate_programs=-2)
    with pytest.raises(OptimizerError, match="num_threads must be an integer >= 1"):
        search(num_threads=0)


def test_every_candidate_bootstraps_from_one_teacher(lm, trainset, monkeypatch):
    """One teacher per compile: an example's teacher run is the same prompt in every candidate that
    visits it, so a real LM's cache pays for it once."""
    import honing_bootstrap.random_search as module

    made = []
    real = module.make_teacher
    monkeypatch.setattr(module, "make_teacher", lambda *a, **k: made.append(k) or real(*a, **k))
    compiled = search(num_candidate_programs=4).compile(hn.Predict(ContractClassify), trainset=trainset,
                                                        valset=devset())
    assert len(made) == 1 and made[0]["seed"] == 0
    booted = [c for c in compiled.compile_record.candidates if c.get("bootstrap")]
    assert len(booted) == 5
    prompts = [r.text() for r in lm.requests]
    assert len(set(prompts)) < len(prompts)  # teacher runs repeated across candidates


# ----------------------------------------------------------------------------------------------------
# defaults: candidates sized by the context, selection by a paired comparison (issue 23)

def test_by_default_every_demo_that_fits_is_offered(trainset, tmp_path):
    from honing.runs import read_events

    with hn.context(lm=fake_lm(context_window=100_000)):
        compiled = BootstrapFewShotWithRandomSearch(intent_match, num_candidate_programs=2,
                                                    display_progress=False).compile(
            hn.Predict(ContractClassify), trainset=trainset, valset=devset(), run_dir=tmp_path / "run")
    labeled = next(c for c in compiled.compile_record.candidates if c["key"] == "labeled")
    assert labeled["demos"] == {"self": len(trainset)}  # the whole trainset fits: all of it, not 16 or 32
    fit = [e for e in read_events(tmp_path / "run" / "events.jsonl") if e["event"] == "demo_fit"]
    assert fit and fit[0]["counts"] == {"self": len(trainset)} and fit[0]["windows"] == {"self": 100_000}


def test_a_small_context_caps_every_candidate_and_says_so(trainset):
    with hn.context(lm=fake_lm(context_window=300)):
        compiled = BootstrapFewShotWithRandomSearch(intent_match, num_candidate_programs=2,
                                                    display_progress=False).compile(
            hn.Predict(ContractClassify), trainset=trainset, valset=devset())
    record = compiled.compile_record
    (note,) = [n for n in record.notes if "fit the 300-token context" in n]
    fits = int(note.split("'self': ")[1].split(" of ")[0])
    assert 0 < fits < len(trainset)
    assert all(c["demos"]["self"] <= fits for c in record.candidates)


def test_a_context_too_small_for_one_demo_leaves_demo_free_candidates(trainset):
    with hn.context(lm=fake_lm(context_window=260)):  # the query and the answer's room only
        compiled = BootstrapFewShotWithRandomSearch(intent_match, num_candidate_programs=2,
                                                    display_progress=False).compile(
            hn.Predict(ContractClassify), trainset=trainset, valset=devset())
    record = compiled.compile_record
    assert any("not even one demo fits" in n for n in record.notes)
    assert all(c["demos"] == {"self": 0} for c in record.candidates)
    assert compiled.predictors()[0].demos == []


def test_the_default_keeps_the_all_demos_program_unless_another_clearly_beats_it(trainset):
    """On a 6-example valset a +1 or +2 win is noise: the labelled program (every demo) stays."""
    with hn.context(lm=fake_lm(context_window=100_000)):
        compiled = BootstrapFewShotWithRandomSearch(intent_match, num_candidate_programs=3,
                                                    display_progress=False).compile(
            hn.Predict(ContractClassify), trainset=trainset, valset=devset())
    record = compiled.compile_record
    labeled = record.scores["labeled"]
    assert all(s - labeled < 3 / len(devset()) for s in record.scores.values())  # no clear winner here
    assert record.score == labeled
    assert len(compiled.predictors()[0].demos) == len(trainset)
