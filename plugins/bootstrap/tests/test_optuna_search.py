"""BootstrapFewShotWithOptuna: the contract, a seeded study, resumable storage, odd predictors, budget."""

from __future__ import annotations

import uuid
from typing import Any

import honing as hn
import optuna
import pytest
from bootstrap_helpers import BudgetAfter, InterruptAfter, TopicThenIntent, contract_lm, devset, fake_lm
from honing.errors import OptimizerError
from honing.optimizers.kit.storage import with_driver
from honing.testing.contract import ContractClassify, OptimizerContract, intent_match
from honing.testing.fake import FakeLM
from honing_bootstrap import BootstrapFewShotWithOptuna


def tpe(**overrides: Any) -> BootstrapFewShotWithOptuna:
    settings = {"metric": intent_match, "num_candidate_programs": 3, "max_bootstrapped_demos": 2,
                "max_labeled_demos": 4, "num_trials": 4, "display_progress": False, **overrides}
    return BootstrapFewShotWithOptuna(**settings)


class TestOptunaContract(OptimizerContract):
    optimizer_name = "BootstrapFewShotWithOptuna"

    def make_lm(self) -> Any:
        return contract_lm()

    def make_optimizer(self, **overrides: Any) -> BootstrapFewShotWithOptuna:
        return tpe(**overrides)


def test_trials_choose_a_demo_set_per_predictor_and_store_their_attrs(lm, trainset):
    run = tpe().compile_run(hn.Predict(ContractClassify), trainset=trainset, valset=devset())
    record = run.program.compile_record
    study = run.artifacts["study"]
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    scored = [t for t in study.trials if "duplicate_of" not in t.user_attrs]
    assert len(scored) == len(record.candidates) == 4
    for trial in scored:
        assert set(trial.params) == {"self"}
        assert trial.user_attrs["demo_sets"] == {"self": trial.params["self"]}
        assert trial.user_attrs["score"] == trial.value
        assert {"errors", "usage", "demos", "state"} <= set(trial.user_attrs["result"])
    assert record.score == max(t.value for t in scored)
    assert set(study.user_attrs["demo_sets"]["self"]) >= {"zero_shot", "labeled"}


def test_same_seed_same_trials_other_seed_other_trials(trainset):
    def choices(seed: int) -> list[str]:
        with hn.context(lm=fake_lm()):
            run = tpe(seed=seed, num_trials=6).compile_run(hn.Predict(ContractClassify), trainset=trainset,
                                                            valset=devset())
        return [t.params["self"] for t in run.artifacts["study"].trials]

    assert choices(1) == choices(1)
    assert choices(1) != choices(2)


def test_a_repeated_choice_is_not_scored_again(lm, trainset):
    run = tpe(num_candidate_programs=1, num_trials=50).compile_run(hn.Predict(ContractClassify), trainset=trainset,
                                                                   valset=devset())
    options = run.artifacts["study"].user_attrs["demo_sets"]["self"]
    keys = [t.params["self"] for t in run.artifacts["study"].trials if "duplicate_of" not in t.user_attrs]
    assert len(keys) == len(set(keys)) == len(options)  # every option scored once, then it stopped
    # one bootstrap pass per demo set, then one scoring pass per distinct choice; nothing more
    bootstrap_calls = len(lm.requests) - len(options) * len(devset())
    assert 0 < bootstrap_calls <= 2 * len(trainset)


def test_a_predictor_with_no_demo_sets_is_not_searched(trainset):
    never = lambda example, prediction, trace=None: False
    with hn.context(lm=fake_lm()):
        run = tpe(metric=never).compile_run(TopicThenIntent(), trainset=trainset, valset=devset())
    compiled = run.program
    topic, _ = compiled.predictors()
    assert topic.demos == []
    assert all(set(t.params) == {"classify"} for t in run.artifacts["study"].trials)
    assert any("predictor 'topic': no demo set" in n for n in compiled.compile_record.notes)


def check_interrupted_compile_resumes(storage: str, study_name: str, trainset: list[hn.Example]) -> None:
    """Kill a compile after its demo sets and two trials, resume it from `storage`: the finished trials
    are kept (not re-run), the demo sets are not rebuilt, and the trial left RUNNING is marked failed."""
    cut = len(fake_calls_to_build(trainset)) + 2 * len(devset()) + 2  # the demo sets and two trials finish
    with hn.context(lm=FakeLM(responder=InterruptAfter(cut))), pytest.raises(KeyboardInterrupt):
        tpe(storage=storage, study_name=study_name).compile(hn.Predict(ContractClassify), trainset=trainset,
                                                            valset=devset())
    study = optuna.load_study(study_name=study_name, storage=with_driver(storage))
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    distinct = {t.params["self"] for t in finished}
    assert len(distinct) == 2 and any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)
    resumed_lm = fake_lm()
    with hn.context(lm=resumed_lm):
        run = tpe(storage=storage, study_name=study_name).compile_run(hn.Predict(ContractClassify),
                                                                      trainset=trainset, valset=devset())
        compiled = run.program
    # the demo sets come from the study and finished trials are kept: only the missing programs are scored
    assert len(resumed_lm.requests) == (4 - len(distinct)) * len(devset())
    record = compiled.compile_record
    assert [c["from_log"] for c in record.candidates] == [True, True, False, False]
    kept = {c["key"]: c["score"] for c in record.candidates if c["from_log"]}
    assert kept == {f"self={t.params['self']}": pytest.approx(t.value, abs=1e-6) for t in finished}
    states = [t.state for t in run.artifacts["study"].trials]
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.FAIL in states
    # a third session has nothing left to do and pays for nothing
    idle_lm = fake_lm()
    with hn.context(lm=idle_lm):
        again = tpe(storage=storage, study_name=study_name).compile(hn.Predict(ContractClassify),
                                                                    trainset=trainset, valset=devset())
    assert not idle_lm.requests and again.compile_record.scores == record.scores


def test_sqlite_storage_makes_an_interrupted_compile_resumable(fast_dir, trainset):
    check_interrupted_compile_resumes(f"sqlite:///{fast_dir / 'study.db'}", "s", trainset)


@pytest.mark.postgres
def test_postgres_storage_makes_an_interrupted_compile_resumable(postgres_url, trainset):
    # the server outlives the test: a fresh study name per run
    check_interrupted_compile_resumes(postgres_url, f"honing-bootstrap-{uuid.uuid4().hex}", trainset)


def test_a_crash_while_storing_the_demo_sets_leaves_a_study_that_resumes(fast_dir, trainset, monkeypatch):
    """The set-up is stored as two study attributes; a crash between the two writes must leave a study that
    the next session can continue (it rebuilds what is missing), never one refused as made on other data."""
    storage = f"sqlite:///{fast_dir / 'study.db'}"
    original, written = optuna.Study.set_user_attr, []

    def crash_on_the_second_setup_write(study: Any, key: str, value: Any) -> None:
        if key in ("data", "demo_sets"):
            written.append(key)
            if len(written) == 2:
                raise KeyboardInterrupt
        original(study, key, value)

    monkeypatch.setattr(optuna.Study, "set_user_attr", crash_on_the_second_setup_write)
    with hn.context(lm=fake_lm()), pytest.raises(KeyboardInterrupt):
        tpe(storage=storage, study_name="s").compile(hn.Predict(ContractClassify), trainset=trainset,
                                                     valset=devset())
    monkeypatch.setattr(optuna.Study, "set_user_attr", original)
    with hn.context(lm=fake_lm()):
        compiled = tpe(storage=storage, study_name="s").compile(hn.Predict(ContractClassify), trainset=trainset,
                                                                valset=devset())
    assert compiled.compile_record.candidates


def test_storage_given_to_compile_as_the_cli_does(fast_dir, lm, trainset):
    storage = f"sqlite:///{fast_dir / 'cli.db'}"
    compiled = tpe().compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset(), storage=storage,
                             study_name="from-cli")
    study = optuna.load_study(study_name="from-cli", storage=storage)
    assert len([t for t in study.trials if "result" in t.user_attrs]) == len(compiled.compile_record.candidates)
    assert any("'from-cli'" in n for n in compiled.compile_record.notes)
    with pytest.raises(OptimizerError, match=r"BootstrapFewShotWithOptuna.compile: storage must be an Optuna "):
        tpe().compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset(), storage=fast_dir)


def test_a_stored_study_with_other_parameters_is_refused(fast_dir, lm, trainset):
    storage = f"sqlite:///{fast_dir / 'study.db'}"
    tpe(storage=storage, study_name="s").compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset())
    with pytest.raises(OptimizerError, match="max_labeled_demos: 4 then, 6 now"):
        tpe(storage=storage, study_name="s", max_labeled_demos=6).compile(hn.Predict(ContractClassify),
                                                                          trainset=trainset, valset=devset())
    with pytest.raises(OptimizerError, match="other trainset/valset data"):
        tpe(storage=storage, study_name="s").compile(hn.Predict(ContractClassify), trainset=trainset[:8],
                                                     valset=devset())


def test_storage_credentials_stay_out_of_the_record():
    optimizer = tpe(storage="postgresql://user:secret@db/optuna")
    assert "secret" not in str(optimizer.record_parameters())


def test_budget_running_out_returns_the_best_trial_so_far(trainset):
    # allow the demo sets and two scored trials, then stop
    n = len(fake_calls_to_build(trainset)) + 2 * len(devset()) + 2
    with hn.context(lm=FakeLM(responder=BudgetAfter(n))):
        compiled = tpe().compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset())
    record = compiled.compile_record
    assert record.budget_limited and len(record.candidates) == 2
    assert any("budget ran out" in n for n in record.notes)


def fake_calls_to_build(trainset: list[hn.Example]) -> list[Any]:
    """The requests building the demo sets takes (a search with no trials to run)."""
    lm = fake_lm()
    with hn.context(lm=lm):
        optimizer = tpe()
        program = hn.Predict(ContractClassify)
        optimizer.demo_sets(program, trainset, None, None)
    return lm.requests


def test_no_valset_is_noted(lm, trainset):
    compiled = tpe().compile(hn.Predict(ContractClassify), trainset=trainset)
    assert any("no valset" in n for n in compiled.compile_record.notes)


def test_run_dir_resume_without_storage_pays_for_nothing_finished(tmp_path, trainset):
    run = tmp_path / "run"
    with hn.context(lm=fake_lm()):
        first = tpe().compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset(), run_dir=run)
    assert (run / "summary.json").exists()
    again_lm = fake_lm()
    with hn.context(lm=again_lm):
        again = tpe().compile(hn.Predict(ContractClassify), trainset=trainset, valset=devset(), run_dir=run,
                              resume=True)
    assert not again_lm.requests  # demo sets and trials come from the run's log
    assert again.predictors()[0].demos == first.predictors()[0].demos
    assert again.compile_record.scores == first.compile_record.scores
