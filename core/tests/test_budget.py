"""Budgets: atomic reservations, limits checked before sending, settling to actual usage."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from honing import settings
from honing.errors import BudgetExceeded, LMError
from honing.lm.budget import Budget, effective_budgets, reserve_all
from honing.lm.client import LM
from honing.lm.types import LMRequest, Usage


def ask(text: str, **kw: Any) -> LMRequest:
    return LMRequest(messages=[{"role": "user", "content": text}], **kw)


# --- the Budget object on its own -------------------------------------------------------------------

def test_reserve_settle_release() -> None:
    b = Budget(max_calls=2, max_tokens=100)
    r = b.reserve(tokens=60)
    assert b.reserved == Usage(calls=1, prompt_tokens=60)
    with pytest.raises(BudgetExceeded) as info:
        b.reserve(tokens=50)  # 60 reserved + 50 > 100
    assert info.value.limit == "max_tokens" and "max_tokens" in str(info.value)
    b.settle(r, Usage(calls=1, prompt_tokens=10, completion_tokens=5))
    b.settle(r, Usage(calls=1, prompt_tokens=10, completion_tokens=5))  # idempotent
    assert b.spent == Usage(calls=1, prompt_tokens=10, completion_tokens=5)
    assert b.reserved == Usage()
    r2 = b.reserve(tokens=50)
    b.release(r2, sent=True)  # failed after sending: the call counts, the tokens do not
    assert b.spent.calls == 2 and b.spent.total_tokens == 15
    with pytest.raises(BudgetExceeded) as info:
        b.reserve(tokens=1)
    assert info.value.limit == "max_calls"
    assert info.value.spent == Usage(calls=2, prompt_tokens=10, completion_tokens=5)
    assert b.remaining() == {"calls": 0, "tokens": 85, "cost": None}


def test_release_unsent_costs_nothing_and_reserve_all_is_all_or_nothing() -> None:
    a, b = Budget(max_calls=5), Budget(max_calls=0)
    with pytest.raises(BudgetExceeded):
        reserve_all([a, b])
    assert a.reserved == Usage() and a.spent == Usage()
    assert effective_budgets(a, None, a, b) == [a, b]


def test_reservations_are_atomic_across_threads() -> None:
    b = Budget(max_calls=7)
    granted, refused = [], []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        for _ in range(5):
            try:
                granted.append(b.reserve())
            except BudgetExceeded:
                refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 7 and len(refused) == 16 * 5 - 7


def test_invalid_limits() -> None:
    with pytest.raises(ValueError):
        Budget(max_calls=-1)


# --- budgets on LM calls ----------------------------------------------------------------------------


@pytest.mark.server
def test_max_calls_under_16_threads(make_openai_server: Any) -> None:
    srv = make_openai_server(latency=0.2)
    budget = Budget(max_calls=5)
    lm = LM("openai/test-model", api_base=srv.url, api_key="k", budget=budget)
    barrier = threading.Barrier(16)

    def call(i: int) -> Any:
        barrier.wait()
        try:
            return lm(ask(f"question number {i}"))
        except BudgetExceeded as exc:
            return exc

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(16)))
    done = [r for r in results if not isinstance(r, BudgetExceeded)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert srv.count == 5
    assert len(done) == 5 and len(refused) == 11
    assert all(r.limit == "max_calls" and isinstance(r.spent, Usage) and r.spent.calls <= 5 for r in refused)
    # "question number i" is 3 words; the echo reply "echo: question number i" is 4
    assert budget.spent == Usage(calls=5, prompt_tokens=15, completion_tokens=20)
    assert lm.usage == budget.spent
    assert budget.reserved == Usage()


@pytest.mark.server
def test_refusal_reports_spent_and_sends_nothing(openai_server: Any) -> None:
    budget = Budget(max_calls=2)
    lm = LM("openai/test-model", api_base=openai_server.url, api_key="k", budget=budget)
    lm(ask("a b"))
    lm(ask("c d"))
    with pytest.raises(BudgetExceeded) as info:
        lm(ask("e f"))
    assert openai_server.count == 2
    assert info.value.spent == Usage(calls=2, prompt_tokens=4, completion_tokens=6)
    assert "max_calls" in str(info.value)
    # cache hits cost nothing and are not refused
    assert lm(ask("a b")).cached
    assert budget.spent.cache_hits == 1 and budget.spent.calls == 2


@pytest.mark.server
def test_max_tokens_budget(openai_server: Any) -> None:
    budget = Budget(max_tokens=40)
    lm = LM("openai/test-model", api_base=openai_server.url, api_key="k", budget=budget)
    # the reservation is prompt tokens + max_tokens; without max_tokens it assumes 1000 and is refused
    with pytest.raises(BudgetExceeded) as info:
        lm(ask("hello there"))
    assert info.value.limit == "max_tokens" and openai_server.count == 0
    lm(ask("hello there", max_tokens=10))
    assert openai_server.count == 1
    assert budget.spent.total_tokens == 2 + 3  # settled to what the server reported, not the estimate
    spent_before = budget.spent
    for i in range(10):
        try:
            lm(ask(f"more words here {i}", max_tokens=10))
        except BudgetExceeded:
            break
    else:
        pytest.fail("the token budget never ran out")
    assert budget.spent.total_tokens <= 40
    assert budget.spent.calls > spent_before.calls


@pytest.mark.server
def test_budget_from_settings_and_lm_both_apply(openai_server: Any) -> None:
    scoped = Budget(max_calls=1)
    own = Budget(max_calls=10)
    lm = LM("openai/test-model", api_base=openai_server.url, api_key="k", budget=own)
    with settings.context(budget=scoped):
        lm(ask("one"))
        with pytest.raises(BudgetExceeded):
            lm(ask("two"))
    assert scoped.spent.calls == 1 and own.spent.calls == 1
    assert own.reserved == Usage()  # the refused call released what it had reserved in `own`
    lm(ask("three"))  # outside the context only `own` applies
    assert own.spent.calls == 2 and scoped.spent.calls == 1 and openai_server.count == 2


@pytest.mark.server
def test_failed_call_counts_the_call_not_the_tokens(openai_server: Any) -> None:
    budget = Budget(max_calls=10, max_tokens=5000)
    lm = LM("openai/test-model", api_base=openai_server.url, api_key="k", budget=budget, num_retries=0)
    openai_server.script(["400"])
    with pytest.raises(LMError):
        lm(ask("fails"))
    assert budget.spent == Usage(calls=1)
    assert budget.reserved == Usage()
    # each retry attempt is a request sent, so it is reserved and counted too
    lm2 = LM("openai/test-model", api_base=openai_server.url, api_key="k", budget=budget, num_retries=3,
             retry_base=0.001, retry_cap=0.01)
    openai_server.script(["500", "500"])
    lm2(ask("eventually works"))
    assert budget.spent.calls == 1 + 3


@pytest.mark.server
def test_max_cost_uses_litellm_prices(openai_server: Any) -> None:
    # gpt-4o-mini is in litellm's price map; the loopback server answers for it
    budget = Budget(max_cost=0.0005)
    lm = LM("openai/gpt-4o-mini", api_base=openai_server.url, api_key="k", budget=budget)
    c = lm(ask("hi " * 100, max_tokens=10))
    assert c.usage.cost > 0 and budget.spent.cost == pytest.approx(c.usage.cost)
    with pytest.raises(BudgetExceeded) as info:
        lm(ask("hi " * 20000, max_tokens=10))  # ~20k prompt tokens at $0.15/M = $0.003 > the limit
    assert info.value.limit == "max_cost" and openai_server.count == 1
