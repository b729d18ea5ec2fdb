"""Faults: with 20% of the calls faulty (429 with and without Retry-After, 500, 503, timeouts, dropped
connections, truncated JSON, empty content, garbage text) every optimizer in the registry completes a
compile; unparseable replies are counted as their example's error in the record and the run log; the
program compiled under faults, evaluated without them, is as good as one compiled without faults; and
`max_errors` means the same for every optimizer: failed examples tolerated in one pass over a dataset
(a bootstrap pass, one evaluation), the next one raising TooManyErrors.

The optimizers come from the registry (`reliability_cases.cases()`), so a new plugin is covered here
without editing this file. Retries use millisecond backoff and a 0.5 s client timeout, so the whole
file runs in well under a minute.
"""

from __future__ import annotations

import pytest
import reliability_cases as rc
from honing.errors import TooManyErrors
from honing.testing.server import FAULT_KINDS, FaultPlan

pytestmark = pytest.mark.server

CASES = rc.cases()
UNPARSEABLE = ("garbage", "empty")


def fault_script(n: int = 45) -> list[str]:
    """Every fifth request faulty, cycling through every fault kind (then the random 20% plan)."""
    return [FAULT_KINDS[(i // 5) % len(FAULT_KINDS)] if i % 5 == 1 else "ok" for i in range(n)]


def asks_for_intent(request) -> bool:
    """A chat request of the task itself (not e.g. an instruction proposal)."""
    messages = (request.body or {}).get("messages") or []
    system = next((m.get("content") or "" for m in messages if m.get("role") == "system"), "")
    return "- intent" in system


def logged_errors(outcome: rc.Outcome) -> int | None:
    """The error count the run log holds: the sum over its steps (candidates, trials, bootstrap passes),
    or the compile's "compiled" event when the optimizer logs no steps."""
    events = outcome.events()
    steps = [e for e in events if e.get("event") not in ("start", "resume", "finish", "compiled")
             and isinstance(e.get("errors"), int)]
    if steps:
        return sum(e["errors"] for e in steps)
    compiled = [e for e in events if e.get("event") == "compiled"]
    return compiled[-1]["errors"] if compiled else None


def test_every_registered_optimizer_is_covered():
    from honing.plugins.registry import optimizer_registry

    assert [c.name for c in CASES] == sorted(optimizer_registry().names())
    assert len(CASES) >= 9, [c.name for c in CASES]  # all plugins of the workspace are installed


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_compile_survives_twenty_percent_faults(case, tmp_path):
    faulty = rc.compile_case(case, tmp_path / "faulty", faults=FaultPlan(rate=0.2, seed=7), script=fault_script(),
                             evaluate=True)
    assert faulty.error is None, f"{case.name} failed under faults: {type(faulty.error).__name__}: {faulty.error}"
    posts = [r for r in faulty.requests if r.method == "POST" and r.path.startswith("/v1/") and "fine_tuning" not in r.path
             and r.path != "/v1/files"]
    assert posts == [] or faulty.faults, "no fault was injected"
    if len(posts) >= 20:
        assert 0.1 <= len(faulty.faults) / len(posts) <= 0.4, (len(faulty.faults), len(posts))
    record = faulty.record
    assert not record.budget_limited
    # every unparseable reply the task got is one failed example, in the record and in the run log
    unparseable = sum(1 for r in faulty.lm_requests if r.fault in UNPARSEABLE and asks_for_intent(r))
    assert record.errors >= unparseable, (record.errors, unparseable, faulty.faults)
    assert logged_errors(faulty) == record.errors, (faulty.events()[-3:], record.errors)

    clean = rc.compile_case(case, tmp_path / "clean", evaluate=True)
    assert clean.error is None, f"{case.name} failed without faults: {clean.error}"
    assert clean.record.errors == 0
    assert faulty.clean_score >= clean.clean_score, (
        f"{case.name}: compiled under faults scores {faulty.clean_score:.3f} without them, "
        f"compiled without faults {clean.clean_score:.3f}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_max_errors_has_one_meaning(case, tmp_path, monkeypatch):
    """Two examples of the trainset and two of the devset get replies nobody can parse. `max_errors=2`
    tolerates them (each pass fails at most those two); `max_errors=1` stops at the second failure of a
    pass with TooManyErrors, for every optimizer that runs examples at all. Set through the optimizer's
    own `max_errors` when it has one, else through ``hn.configure(max_errors=...)``."""
    monkeypatch.setattr(rc, "POISONED", 2)

    def run(limit: int, where: str) -> rc.Outcome:
        if rc.accepts(case.cls, "max_errors"):
            return rc.compile_case(case, tmp_path / where, overrides={"max_errors": limit})
        return rc.compile_case(case, tmp_path / where, context={"max_errors": limit})

    tolerated = run(2, "two")
    assert tolerated.error is None, f"{case.name}: max_errors=2 with 2 failing examples per pass raised {tolerated.error!r}"
    strict = run(1, "one")
    if tolerated.record.errors == 0:  # the optimizer ran no example (e.g. LabeledFewShot)
        assert strict.error is None
        assert not [r for r in tolerated.lm_requests if asks_for_intent(r)]
    else:
        assert isinstance(strict.error, TooManyErrors), (
            f"{case.name}: max_errors=1 with 2 failing examples per pass gave {strict.error!r}")
        assert "max_errors=1" in str(strict.error)
