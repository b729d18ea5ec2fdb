"""Budget-limited compiles: when a Budget runs out mid-compile, every optimizer in the registry returns
the best program found so far, marked ``budget_limited`` in its record and its run log, and raises
BudgetExceeded only when nothing usable exists yet. The server never receives more calls than the
budget allows.

A "step" is what an optimizer logs with a score (a candidate, a trial, a scored member): once one has
finished, a program exists and must come back. The optimizers come from the registry, so a new plugin
is covered without editing this file.
"""

from __future__ import annotations

import honing as hn
import pytest
import reliability_cases as rc
from honing.errors import BudgetExceeded

pytestmark = pytest.mark.server

CASES = rc.cases()


def scored_steps(outcome: rc.Outcome) -> list[dict]:
    return [e for e in outcome.events() if e.get("event") not in ("start", "resume", "finish", "compiled")
            and isinstance(e.get("score"), (int, float))]


def logged_budget_limited(outcome: rc.Outcome) -> bool:
    last = [e for e in outcome.events() if e.get("event") in ("finish", "compiled")]
    return bool(last) and last[-1].get("budget_limited") is True


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_budget_running_out_returns_the_best_so_far(case, tmp_path):
    full = rc.compile_case(case, tmp_path / "full")
    assert full.error is None, f"{case.name}: {full.error!r}"
    needed = len(full.lm_requests)
    assert full.record.calls == needed and not full.record.budget_limited

    if needed == 0:  # an optimizer that makes no LM call never runs out
        nothing = rc.compile_case(case, tmp_path / "zero", budget=hn.Budget(max_calls=0))
        assert nothing.error is None and not nothing.record.budget_limited
        return

    for limit in (needed // 2, needed - 1):
        budget = hn.Budget(max_calls=limit)
        cut = rc.compile_case(case, tmp_path / f"limit-{limit}", budget=budget)
        assert len(cut.lm_requests) <= limit, f"{case.name}: {len(cut.lm_requests)} calls sent, budget {limit}"
        assert budget.spent.calls == len(cut.lm_requests)
        if cut.error is not None:
            assert isinstance(cut.error, BudgetExceeded), f"{case.name} with max_calls={limit}: {cut.error!r}"
            assert not scored_steps(cut), (
                f"{case.name} raised BudgetExceeded with max_calls={limit} although it had scored "
                f"{len(scored_steps(cut))} step(s): the best of those must be returned")
        else:
            assert cut.record.budget_limited, f"{case.name}: the budget ran out but the record does not say so"
            assert logged_budget_limited(cut), cut.events()[-2:]
            assert any("budget" in note for note in cut.record.notes), cut.record.notes
            cut.program.save(tmp_path / f"{limit}.json")  # a usable program: it saves like any other


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_no_budget_at_all_raises_when_nothing_is_usable(case, tmp_path):
    cut = rc.compile_case(case, tmp_path / "none", budget=hn.Budget(max_calls=0))
    assert cut.lm_requests == []
    if cut.error is None:  # something usable needs no call (labelled demos, an unscored ensemble)
        calls_needed = rc.compile_case(case, tmp_path / "full").record.calls
        assert cut.record.budget_limited == (calls_needed > 0), (case.name, calls_needed, cut.record)
    else:
        assert isinstance(cut.error, BudgetExceeded), f"{case.name}: {cut.error!r}"
        assert "before anything usable" in str(cut.error)
