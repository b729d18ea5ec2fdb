"""BayesianSignatureOptimizer with scripted fake LMs: candidates, trials, presets, the plan, storage checks."""

from __future__ import annotations

import json

import honing as hn
import pytest
from bayesian_helpers import GOOD, ScriptedLM, Twice, devset, instruction_of, many, trainset
from honing.testing.contract import ContractClassify, intent_match
from honing.testing.fake import FakeLM
from honing_bayesian import BayesianSignatureOptimizer

ORIGINAL = "Classify the banking customer query into one intent."


def optimizer(**overrides):
    return BayesianSignatureOptimizer(**{"metric": intent_match, "auto": None, "num_candidates": 3,
                                         "num_trials": 6, "seed": 0, **overrides})


def test_finds_and_keeps_a_clearly_better_instruction():
    lm = ScriptedLM(["Pick the single intent that best fits the customer's banking query.", GOOD])
    with hn.context(lm=lm):
        compiled = optimizer().compile(hn.Predict(ContractClassify), trainset=trainset(), valset=devset())
    assert instruction_of(compiled) == GOOD
    record = compiled.compile_record
    assert record.score == 1.0 and record.scores["baseline"] < 1.0
    # every trial is in the record, with its instruction text and demo ids; the baseline comes first
    assert record.candidates[0]["baseline"] and record.candidates[0]["params"] == {"self.instruction": 0,
                                                                                  "self.demos": 0}
    assert all(c["instructions"]["self"] for c in record.candidates)
    assert any(c["instructions"]["self"] == GOOD and c["score"] == 1.0 for c in record.candidates)
    # the grounded proposer saw the data summary, the program, the role, demos and a tip
    prompt = lm.proposal_requests[0].text()
    for part in ("Dataset Summary:", "12 examples", "Program Description:", "Predictor Role:", "Example Demos:",
                 "Text: ", "Current Instruction: " + ORIGINAL, "Tip:"):
        assert part in prompt, part
    assert lm.proposal_requests[0].temperature == 1.0 and lm.proposal_requests[0].rollout is not None


def test_garbage_proposals_are_counted_and_the_original_kept():
    lm = ScriptedLM(["Proposed Instruction:", "**Instruction:** `Intent`", "Dataset Summary: 12 examples."])
    with hn.context(lm=lm):
        compiled = optimizer().compile(hn.Predict(ContractClassify), trainset=trainset(), valset=devset())
    assert instruction_of(compiled) == ORIGINAL
    note = next(n for n in compiled.compile_record.notes if n.startswith("prompt model:"))
    assert "0 of" in note and "garbage" in note
    assert any("1 instruction candidates" in n for n in compiled.compile_record.notes)
    # bounded: 2 slots x 3 attempts
    assert len(lm.proposal_requests) == 6


def test_duplicate_proposals_are_replaced():
    lm = ScriptedLM([ORIGINAL, "Pick the single intent that best fits the customer's banking query.",
                     "Pick the single intent that best fits the customer's banking query.", GOOD])
    with hn.context(lm=lm):
        compiled = optimizer().compile(hn.Predict(ContractClassify), trainset=trainset(), valset=devset())
    listed = next(n for n in compiled.compile_record.notes if n.startswith("predictor 'self': 3 instruction"))
    assert listed.count("Pick the single intent") == 1 and GOOD in listed
    assert instruction_of(compiled) == GOOD


def test_minibatches_and_periodic_full_evaluations():
    valset = many(30)
    lm = ScriptedLM(["Pick the single intent that best fits the customer's banking query.", GOOD])
    with hn.context(lm=lm):
        compiled = optimizer(num_trials=6, minibatch_size=8, minibatch_full_eval_steps=2).compile(
            hn.Predict(ContractClassify), trainset=trainset(), valset=valset)
    trials = compiled.compile_record.candidates
    mini = [t for t in trials if t["kind"] == "minibatch"]
    full = [t for t in trials if t["kind"] == "full"]
    assert len(mini) == 6 and all(t["n_examples"] == 8 for t in mini)
    assert full[0]["baseline"] and full[0]["trial"] == 0
    assert all(t["n_examples"] == 30 for t in full)
    # one full evaluation per 2 minibatch trials (of a configuration not yet fully scored), at most
    assert 2 <= len(full) - 1 <= 4
    assert len({t["key"] for t in full}) == len(full)
    best = max(full, key=lambda t: t["score"])
    assert compiled.compile_record.score == best["score"]
    assert instruction_of(compiled) == best["instructions"]["self"]


def test_valset_smaller_than_the_minibatch_is_used_whole_and_said():
    with hn.context(lm=ScriptedLM([GOOD])):
        compiled = optimizer(minibatch_size=35).compile(hn.Predict(ContractClassify), trainset=trainset(),
                                                        valset=devset())
    assert any("not more than minibatch_size=35" in n for n in compiled.compile_record.notes)
    assert {c["kind"] for c in compiled.compile_record.candidates} == {"full"}


def test_multi_predictor_program_searches_each_predictor():
    with hn.context(lm=ScriptedLM(["Pick the single intent that best fits the customer's banking query.", GOOD])):
        compiled = optimizer(num_trials=8).compile(Twice(), trainset=trainset(), valset=devset())
    params = compiled.compile_record.candidates[0]["params"]
    assert set(params) == {"first.instruction", "first.demos", "second.instruction", "second.demos"}
    assert compiled.compile_record.score >= compiled.compile_record.scores["baseline"]


def test_demo_sets_come_from_the_core_bootstrapping():
    with hn.context(lm=ScriptedLM([GOOD])):
        compiled = optimizer(num_candidates=4, max_bootstrapped_demos=2, max_labeled_demos=3).compile(
            hn.Predict(ContractClassify), trainset=trainset(), valset=devset())
    sets = next(n for n in compiled.compile_record.notes if "demo sets:" in n)
    assert sets.endswith("student, labeled, bootstrap, shuffle_0")
    shown = [c["demos"]["self"] for c in compiled.compile_record.candidates]
    assert all(len(d) <= 3 for d in shown)
    assert any(any(i.startswith("bootstrap#") for i in d) for d in shown)


def test_seeded_runs_repeat_and_other_seeds_differ():
    def run(seed):
        with hn.context(lm=ScriptedLM(["Pick the single intent that best fits the customer's banking query.",
                                       GOOD])):
            record = optimizer(seed=seed, num_trials=5).compile(hn.Predict(ContractClassify), trainset=many(24),
                                                               valset=many(40)[12:]).compile_record
        return [(c["key"], c["score"]) for c in record.candidates]

    assert run(1) == run(1)
    assert run(1) != run(2)


# -- presets, the plan, dry runs --------------------------------------------------------------------------

def test_num_trials_and_auto_both_set_is_an_error():
    with pytest.raises(hn.OptimizerError, match="num_trials=6 and auto='light' are both set"):
        BayesianSignatureOptimizer(intent_match, num_trials=6)
    with pytest.raises(hn.OptimizerError, match="auto=None needs num_trials"):
        BayesianSignatureOptimizer(intent_match, auto=None)
    with pytest.raises(hn.OptimizerError, match="num_candidates=3 and auto='medium'"):
        BayesianSignatureOptimizer(intent_match, auto="medium", num_candidates=3)
    with pytest.raises(hn.OptimizerError, match="auto must be one of"):
        BayesianSignatureOptimizer(intent_match, auto="huge")


def test_dry_run_prints_the_plan_and_sends_nothing(capsys):
    lm = FakeLM([])
    with hn.context(lm=lm):
        student = hn.Predict(ContractClassify)
        result = BayesianSignatureOptimizer(intent_match, auto="light").compile(
            student, trainset=trainset(), valset=many(120), dry_run=True)
    assert lm.requests == []
    out = capsys.readouterr().out
    assert "dry run" in out and "LM calls" in out and "tokens" in out and "cost" in out
    # light: 6 candidates, 10 trials for one predictor, valset sampled down to 100
    assert "6 instruction candidates" in out and "10 trials on minibatches of 35" in out and "of 100" in out
    assert instruction_of(result) == ORIGINAL and result.compile_record.name == "BayesianSignatureOptimizer"


def test_plan_is_logged_before_anything_is_spent_and_local_models_cost_nothing():
    from honing_bayesian.plan import price

    with hn.context(lm=ScriptedLM([GOOD])):
        run = optimizer().compile_run(hn.Predict(ContractClassify), trainset=trainset(), valset=devset())
    compiled = run.program
    assert any(n.startswith("plan:") for n in compiled.compile_record.notes)
    plan = run.artifacts["plan"]
    assert compiled.compile_record.calls <= plan.calls[1]  # an upper bound (early stops, reuse)
    assert price(hn.LM("local/smollm2-135m"), 1000, 100) == 0.0
    assert price(hn.LM("openai/gpt-4o-mini"), 1_000_000, 0) > 0


# -- storage: SQLite in the run directory ---------------------------------------------------------------

def test_run_dir_keeps_the_study_and_a_resume_repeats_no_call(tmp_path):
    run = tmp_path / "run"
    first_lm = ScriptedLM(["Pick the single intent that best fits the customer's banking query.", GOOD])
    with hn.context(lm=first_lm):
        first = optimizer().compile(hn.Predict(ContractClassify), trainset=trainset(), valset=devset(), run_dir=run)
    assert (run / "study.db").exists()
    events = [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert "proposals" in events and "finish" in events
    lm = ScriptedLM([])
    with hn.context(lm=lm):
        again = optimizer().compile(hn.Predict(ContractClassify), trainset=trainset(), valset=devset(), run_dir=run,
                                    resume=True)
    assert lm.requests == []  # candidates and finished trials read back from the study
    assert instruction_of(again) == instruction_of(first) == GOOD
    assert again.compile_record.candidates == first.compile_record.candidates


def test_interrupted_compile_resumes_keeping_finished_trials(tmp_path):
    proposals = ["Pick the single intent that best fits the customer's banking query.", GOOD]
    reference = ScriptedLM(proposals)
    with hn.context(lm=reference):
        optimizer().compile(hn.Predict(ContractClassify), trainset=trainset(), valset=devset())
    total = len(reference.task_requests)

    class Dies(ScriptedLM):
        def __call__(self, request):
            if len(self.task_requests) >= total - 8:  # in the middle of a late trial
                raise KeyboardInterrupt
            return super().__call__(request)

    dying = Dies(proposals)
    run = tmp_path / "run"
    with hn.context(lm=dying), pytest.raises(KeyboardInterrupt):
        optimizer().compile(hn.Predict(ContractClassify), trainset=trainset(), valset=devset(), run_dir=run)
    lm = ScriptedLM([])
    with hn.context(lm=lm):
        compiled = optimizer().compile(hn.Predict(ContractClassify), trainset=trainset(), valset=devset(),
                                       run_dir=run, resume=True)
    assert not lm.proposal_requests  # the candidates were read back, not proposed again
    trials = compiled.compile_record.candidates
    failed = [t["trial"] for t in trials if t["state"] == "FAIL"]
    assert len(failed) == 1  # the interrupted trial
    assert all(t["state"] == "COMPLETE" for t in trials if t["trial"] != failed[0])
    # the resumed session paid only for the unfinished work (no LM cache here: the fake has none)
    assert 0 < len(lm.task_requests) <= 8 + 2 * len(devset())
    assert instruction_of(compiled) == GOOD


def test_a_study_with_other_parameters_is_refused_naming_the_difference(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with hn.context(lm=ScriptedLM([GOOD])):
        optimizer(storage=url, study_name="s").compile(hn.Predict(ContractClassify), trainset=trainset(),
                                                       valset=devset())
    lm = ScriptedLM([GOOD])
    with hn.context(lm=lm), pytest.raises(hn.OptimizerError, match=r"other parameters \(num_trials: 6 in the study, "
                                                                    r"7 now\)"):
        optimizer(storage=url, study_name="s", num_trials=7).compile(hn.Predict(ContractClassify),
                                                                     trainset=trainset(), valset=devset())
    with hn.context(lm=lm), pytest.raises(hn.OptimizerError, match="another trainset, valset or program"):
        optimizer(storage=url, study_name="s").compile(hn.Predict(ContractClassify), trainset=trainset(),
                                                       valset=devset()[:4])
    assert lm.requests == []


def test_a_worker_joining_a_half_claimed_study_waits_for_all_of_its_identity(tmp_path):
    """The creator writes the study's identity one attribute at a time; a worker that joins in between (seen
    in CI with two workers on PostgreSQL) must wait for the rest instead of calling the data different."""
    import threading

    import optuna
    from honing_bayesian import study as studies

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s", direction="maximize")
    parameters, data = {"num_trials": 6}, studies.fingerprint(["data"])
    study.set_user_attr(studies.ATTR_OPTIMIZER, "BayesianSignatureOptimizer")
    study.set_user_attr(studies.ATTR_PARAMETERS, parameters)  # the data not written yet
    late = threading.Timer(0.5, study.set_user_attr, (studies.ATTR_DATA, data))
    late.start()
    try:
        studies.check_study(study, "BayesianSignatureOptimizer", parameters, data, "worker-b", wait=10)
    finally:
        late.cancel()
    assert study.user_attrs[studies.ATTR_DATA] == data
    with pytest.raises(hn.OptimizerError, match="another trainset, valset or program"):
        studies.check_study(study, "BayesianSignatureOptimizer", parameters, studies.fingerprint(["other"]), "c")


def test_unreachable_storage_is_a_clear_error_before_any_call():
    lm = ScriptedLM([GOOD])
    with hn.context(lm=lm), pytest.raises(hn.OptimizerError, match=r"cannot open the study storage "
                                                                   r"postgresql://honing:\*\*\*@127\.0\.0\.1:9/x"):
        optimizer(storage="postgresql://honing:secret@127.0.0.1:9/x").compile(
            hn.Predict(ContractClassify), trainset=trainset(), valset=devset())
    assert lm.requests == []


def test_storage_passed_to_compile_wins_and_its_password_is_not_recorded(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with hn.context(lm=ScriptedLM([GOOD])):
        opt = optimizer(storage="postgresql://u:topsecret@127.0.0.1:9/x")
        assert "topsecret" not in json.dumps(opt.record_parameters())
        run = opt.compile_run(hn.Predict(ContractClassify), trainset=trainset(), valset=devset(), storage=url,
                              study_name="mine")
    compiled = run.program
    assert run.artifacts["study"].study_name == "mine"
    assert compiled.compile_record.score == 1.0


@pytest.mark.parametrize(("auto", "candidates", "trials", "val"), [("light", 6, 10, 100), ("medium", 12, 18, 300),
                                                                  ("heavy", 18, 27, 1000)])
def test_auto_presets_set_candidates_trials_and_valset(auto, candidates, trials, val):
    lm = FakeLM([])
    with hn.context(lm=lm):
        opt = BayesianSignatureOptimizer(intent_match, auto=auto)
        run = opt.compile_run(hn.Predict(ContractClassify), trainset=trainset(), valset=many(1200),
                              dry_run=True)
    assert lm.requests == []
    plan = run.artifacts["plan"]
    assert (plan.instruction_candidates, plan.num_trials, plan.val) == (candidates, trials, val)
    assert plan.calls[0] > 0 and plan.tokens > 0 and plan.cost is None  # a fake LM has no price
