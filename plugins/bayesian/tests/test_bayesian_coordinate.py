"""SignatureOptimizer: coordinate ascent over instructions (scripted fake LMs)."""

from __future__ import annotations

import json

import honing as hn
import pytest
from bayesian_helpers import GOOD, ScriptedLM, Twice, devset, instruction_of, trainset
from honing.testing.contract import ContractClassify, intent_match
from honing_bayesian import SignatureOptimizer

ORIGINAL = "Classify the banking customer query into one intent."


def test_finds_and_keeps_a_clearly_better_instruction():
    # round 0: a garbage reply (retried), a mediocre rewrite, then the good one; later rounds repeat it
    lm = ScriptedLM(["Intent.", "Pick the single intent that best fits the customer's banking query.", GOOD,
                     "Read the banking query and answer with the intent it asks about, nothing else."])
    with hn.context(lm=lm):
        compiled = SignatureOptimizer(intent_match, breadth=3, depth=2).compile(
            hn.Predict(ContractClassify), trainset=trainset(), valset=devset())
    assert instruction_of(compiled) == GOOD
    record = compiled.compile_record
    assert record.score == 1.0
    tried = [c["instruction"] for c in record.candidates if c["predictor"] == "self"]
    assert tried[0] == ORIGINAL and GOOD in tried
    assert all(c["score"] is not None for c in record.candidates)
    assert any("1 not a sentence" in n for n in record.notes), record.notes
    # round 1 showed the prompt model the attempts with their scores, worst first, best last
    shown = lm.proposal_requests[-1].text()
    assert "score 1.00" in shown and shown.index("score 0.") < shown.index("score 1.00")


def test_garbage_prompt_model_keeps_the_original_and_counts_it():
    lm = ScriptedLM(['"Instruction:"', "", "intent intent intent intent intent intent intent intent intent intent"])
    with hn.context(lm=lm):
        student = hn.Predict(ContractClassify)
        compiled = SignatureOptimizer(intent_match, breadth=3, depth=2).compile(
            student, trainset=trainset(), valset=devset())
    assert instruction_of(compiled) == ORIGINAL
    record = compiled.compile_record
    assert [c["origin"] for c in record.candidates] == ["student", "original"]
    note = next(n for n in record.notes if n.startswith("prompt model:"))
    assert "0 of" in note and "garbage" in note and "dropped" in note


def test_never_worse_than_the_student_and_ties_keep_the_original():
    # every proposal scores exactly like the original (the task model ignores them): the original stays
    lm = ScriptedLM(["Decide which of the listed intents the query expresses.",
                     "Choose the intent of the customer's question from the list.",
                     "Name the one intent that the banking customer is asking about."])
    with hn.context(lm=lm):
        student = hn.Predict(ContractClassify)
        baseline = hn.Evaluate(devset=devset(), metric=intent_match)(student).score
        compiled = SignatureOptimizer(intent_match, breadth=3, depth=2).compile(
            student, trainset=trainset(), valset=devset())
    assert instruction_of(compiled) == ORIGINAL
    assert compiled.compile_record.score == baseline
    assert all(c["score"] == baseline for c in compiled.compile_record.candidates)


def test_predictors_in_turn_each_against_the_others_best():
    lm = ScriptedLM(["Pick the single intent that best fits the customer's banking query.", GOOD])
    with hn.context(lm=lm):
        compiled = SignatureOptimizer(intent_match, breadth=3, depth=1).compile(
            Twice(), trainset=trainset(), valset=devset())
    # only the second predictor's answer counts: it gets the good instruction, the first keeps its own
    assert instruction_of(compiled, "second") == GOOD
    assert instruction_of(compiled, "first") == ORIGINAL
    record = compiled.compile_record
    assert record.score == 1.0
    assert [c["predictor"] for c in record.candidates][:1] == [None]
    assert {c["predictor"] for c in record.candidates[1:]} == {"first", "second"}
    # the second predictor's original, in the program with the first one's winner, was not scored again
    assert any(c.get("reused") for c in record.candidates if c["predictor"] == "second")


def test_without_valset_scores_on_the_trainset_and_says_so():
    with hn.context(lm=ScriptedLM([GOOD])):
        compiled = SignatureOptimizer(intent_match, breadth=2, depth=1).compile(
            hn.Predict(ContractClassify), trainset=trainset())
    assert any("no valset" in n for n in compiled.compile_record.notes)
    assert instruction_of(compiled) == GOOD


def test_prompt_model_is_used_for_proposals_only():
    task, prompt = ScriptedLM([]), ScriptedLM([GOOD])
    with hn.context(lm=task):
        compiled = SignatureOptimizer(intent_match, prompt_model=prompt, breadth=2, depth=1).compile(
            hn.Predict(ContractClassify), trainset=trainset(), valset=devset())
    assert instruction_of(compiled) == GOOD
    assert prompt.proposal_requests and not prompt.task_requests
    assert task.task_requests and not task.proposal_requests
    # proposals are sampled at init_temperature with a rollout each (fresh samples, not the cached text)
    assert prompt.proposal_requests[0].temperature == 1.4
    assert prompt.proposal_requests[0].rollout is not None


def test_run_dir_logs_every_attempt_and_a_resume_repeats_nothing(tmp_path):
    proposals = ["Pick the single intent that best fits the customer's banking query.", GOOD]
    with hn.context(lm=ScriptedLM(proposals)):
        first = SignatureOptimizer(intent_match, breadth=3, depth=1).compile(
            hn.Predict(ContractClassify), trainset=trainset(), valset=devset(), run_dir=tmp_path / "run")
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("attempt") == 3  # baseline + 2 proposals
    lm = ScriptedLM(proposals)
    with hn.context(lm=lm):
        again = SignatureOptimizer(intent_match, breadth=3, depth=1).compile(
            hn.Predict(ContractClassify), trainset=trainset(), valset=devset(), run_dir=tmp_path / "run",
            resume=True)
    assert instruction_of(again) == instruction_of(first) == GOOD
    assert not lm.task_requests  # every attempt came from the log


@pytest.mark.parametrize(("kwargs", "message"), [({"breadth": 1}, "breadth must be"), ({"depth": 0}, "depth must be"),
                                                 ({"prompt_model": "gpt-4o"}, "prompt_model must be an LM")])
def test_bad_parameters_are_clear_errors(kwargs, message):
    with pytest.raises(hn.OptimizerError, match=message):
        SignatureOptimizer(intent_match, **kwargs)


def test_no_lm_at_all_is_a_clear_error():
    with pytest.raises(hn.OptimizerError, match="no prompt_model and no configured LM"):
        SignatureOptimizer(intent_match, breadth=2, depth=1).compile(hn.Predict(ContractClassify),
                                                                    trainset=trainset())


def test_breadth_and_depth_set_the_proposals_and_every_attempt_is_recorded():
    # distinct usable proposals: round 0 asks breadth - 1 = 2, round 1 asks breadth = 3
    proposals = [f"Classify the banking query into one intent, variant {word}." for word in
                 ("alpha", "bravo", "charlie", "delta", "echo")]
    lm = ScriptedLM(proposals)
    with hn.context(lm=lm):
        compiled = SignatureOptimizer(intent_match, breadth=3, depth=2).compile(
            hn.Predict(ContractClassify), trainset=trainset(), valset=devset())
    assert len(lm.proposal_requests) == 2 + 3
    attempts = [c for c in compiled.compile_record.candidates if c["predictor"] == "self"]
    assert [(c["depth"], c["origin"]) for c in attempts] == [(0, "original"), (0, "proposal"), (0, "proposal"),
                                                            (1, "proposal"), (1, "proposal"), (1, "proposal")]
    assert [c["instruction"] for c in attempts] == [ORIGINAL, *proposals]
    assert all(isinstance(c["score"], float) for c in attempts)
    # round 1 was shown round 0's attempts with their scores
    assert all(f"{text} (score" in lm.proposal_requests[2].text() for text in [ORIGINAL, *proposals[:2]])
