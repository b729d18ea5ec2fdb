"""The shared reliability mechanics of `Optimizer.compile`: budget-limited best-so-far, the run log every
optimizer gets, and a clean Ctrl-C."""

from __future__ import annotations


import attrs
import honing as hn
import pytest
from honing.errors import BudgetExceeded
from honing.lm.usage import track_usage
from honing.optimizers.base import Optimizer
from honing.record import OptimizerRecord
from honing.runs import RunDirError, read_events


def trainset() -> list[hn.Example]:
    return [hn.Example(q="a", a="b").with_inputs("q"), hn.Example(q="c", a="d").with_inputs("q")]


class Spends(Optimizer):
    """Asks a budget for `calls` calls; what it does when refused is set per test."""

    @attrs.frozen
    class Settings:
        calls: int
        on_refusal: str = "raise"

    def optimize(self, program, run):
        budget = hn.settings.current().budget
        done = 0
        try:
            for _ in range(self.calls):
                budget.release(budget.reserve(), sent=True)
                done += 1
                program.predictors()[0].demos = [dict(e) for e in run.trainset[:done]]
        except BudgetExceeded as exc:
            if self.on_refusal == "swallow":  # keeps what it had, but forgets to say so
                return program
            if self.on_refusal == "best_program" and done:
                exc.best_program = program
            raise
        return program


def test_refusals_are_tracked():
    with track_usage() as tracker, pytest.raises(BudgetExceeded):
        hn.Budget(max_calls=0).reserve()
    assert tracker.refusals == 1 and "max_calls" in tracker.last_refusal


def test_a_refusal_the_optimizer_swallowed_still_marks_the_record():
    with hn.context(budget=hn.Budget(max_calls=1)):
        compiled = Spends(3, "swallow").compile(hn.Predict("q -> a"), trainset=trainset())
    record = compiled.compile_record
    assert record.budget_limited
    assert any("Budget refused 1 call" in n for n in record.notes)


def test_best_program_on_the_exception_is_returned_marked():
    with hn.context(budget=hn.Budget(max_calls=1)):
        compiled = Spends(3, "best_program").compile(hn.Predict("q -> a"), trainset=trainset())
    assert compiled.compile_record.budget_limited
    assert len(compiled.predictors()[0].demos) == 1


def test_nothing_usable_raises_budget_exceeded_saying_so(tmp_path):
    with hn.context(budget=hn.Budget(max_calls=0)), pytest.raises(BudgetExceeded, match="before anything usable"):
        Spends(3, "best_program").compile(hn.Predict("q -> a"), trainset=trainset(), run_dir=tmp_path / "run")
    assert [e["event"] for e in read_events(tmp_path / "run" / "events.jsonl")] == ["start", "budget_exceeded"]


def test_no_refusal_no_mark():
    with hn.context(budget=hn.Budget(max_calls=5)):
        compiled = Spends(3).compile(hn.Predict("q -> a"), trainset=trainset())
    assert not compiled.compile_record.budget_limited


def test_every_optimizer_gets_a_run_log_with_its_outcome(tmp_path):
    class Counts(Spends):
        def optimize(self, program, run):
            run.count_errors(2)
            program = super().optimize(program, run)
            program.compile_record = OptimizerRecord(name=self.name, errors=1)
            return program

    run = tmp_path / "run"
    with hn.context(budget=hn.Budget(max_calls=10)):
        compiled = Counts(1).compile(hn.Predict("q -> a"), trainset=trainset(), run_dir=run)
        assert compiled.compile_record.errors == 3
        events = read_events(run / "events.jsonl")
        assert [e["event"] for e in events] == ["start", "compiled"]
        assert events[-1]["errors"] == 3 and events[-1]["budget_limited"] is False
        with pytest.raises(RunDirError, match="resume"):
            Counts(1).compile(hn.Predict("q -> a"), trainset=trainset(), run_dir=run)
        Counts(1).compile(hn.Predict("q -> a"), trainset=trainset(), run_dir=run, resume=True)
    assert [e["event"] for e in read_events(run / "events.jsonl")] == ["start", "compiled", "resume", "compiled"]


def test_ctrl_c_is_logged_and_says_how_to_resume(tmp_path, capsys):
    class Interrupted(Optimizer):
        def optimize(self, program, run):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Interrupted().compile(hn.Predict("q -> a"), trainset=trainset(), run_dir=tmp_path / "run")
    assert read_events(tmp_path / "run" / "events.jsonl")[-1]["event"] == "interrupted"
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" in err and str(tmp_path / "run") in err
    with pytest.raises(KeyboardInterrupt):
        Interrupted().compile(hn.Predict("q -> a"), trainset=trainset())
    assert "--run-dir" in capsys.readouterr().err
