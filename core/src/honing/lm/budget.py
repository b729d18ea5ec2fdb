"""Budgets: limits on calls, tokens and cost that a call must fit in *before* it is sent.

A call first `reserve`s its estimate (1 call, the prompt tokens plus its max_tokens, the cost of those)
under the budget's lock, so that many threads can never together pass a limit: with ``max_calls=N``
exactly N requests can be in flight or done, never N+1. When the call returns, the reservation is
`settle`d to the actual usage; a call that failed after being sent is settled to one call and no tokens.

    budget = Budget(max_calls=100, max_cost=0.50)
    lm = LM("openai/gpt-4o-mini", budget=budget)     # or honing.settings.context(budget=budget)
    ...
    budget.spent  # Usage of what was actually spent
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import attrs

from honing.errors import BudgetExceeded
from honing.lm.types import Usage


@attrs.define(eq=False)
class Reservation:
    """What one call holds in one budget until it settles."""

    budget: Budget
    calls: int
    tokens: int
    cost: float
    open: bool = True


class Budget:
    """Limits on calls (`max_calls`), tokens (`max_tokens`, prompt plus completion) and dollars (`max_cost`).

    `None` means no limit. `spent` is the settled usage; `reserved` what calls in flight hold.
    Cache hits are recorded in `spent.cache_hits` and cost nothing.
    """

    def __init__(self, *, max_calls: int | None = None, max_tokens: int | None = None,
                 max_cost: float | None = None) -> None:
        for name, value in (("max_calls", max_calls), ("max_tokens", max_tokens), ("max_cost", max_cost)):
            if value is not None and value < 0:
                raise ValueError(f"Budget {name} must be >= 0, got {value}")
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self._lock = threading.Lock()
        self._spent = Usage()
        self._reserved_calls = 0
        self._reserved_tokens = 0
        self._reserved_cost = 0.0

    def __repr__(self) -> str:
        limits = ", ".join(f"{n}={v}" for n, v in (("max_calls", self.max_calls),
                                                     ("max_tokens", self.max_tokens),
                                                     ("max_cost", self.max_cost)) if v is not None)
        spent = self.spent
        return (f"Budget({limits or 'no limits'}; spent {spent.calls} calls, {spent.total_tokens} tokens, "
                f"${spent.cost:.4f})")

    @property
    def spent(self) -> Usage:
        with self._lock:
            return self._spent

    @property
    def reserved(self) -> Usage:
        """What the calls in flight have reserved (tokens all counted as prompt tokens)."""
        with self._lock:
            return Usage(calls=self._reserved_calls, prompt_tokens=self._reserved_tokens,
                         cost=self._reserved_cost)

    def remaining(self) -> dict[str, float | int | None]:
        """How much of each limit is left, counting reservations (None for no limit)."""
        with self._lock:
            s = self._spent
            return {
                "calls": None if self.max_calls is None
                else self.max_calls - s.calls - self._reserved_calls,
                "tokens": None if self.max_tokens is None
                else self.max_tokens - s.total_tokens - self._reserved_tokens,
                "cost": None if self.max_cost is None
                else self.max_cost - s.cost - self._reserved_cost,
            }

    def reserve(self, *, calls: int = 1, tokens: int = 0, cost: float = 0.0) -> Reservation:
        """Hold `calls`, `tokens` and `cost` for a call about to be sent, or raise `BudgetExceeded`."""
        with self._lock:
            s = self._spent
            if self.max_calls is not None and s.calls + self._reserved_calls + calls > self.max_calls:
                self._refuse("max_calls", f"{s.calls} calls spent and {self._reserved_calls} in flight, "
                             f"limit {self.max_calls}")
            tokens_after = s.total_tokens + self._reserved_tokens + tokens
            if self.max_tokens is not None and tokens_after > self.max_tokens:
                self._refuse("max_tokens", f"{s.total_tokens} tokens spent, {self._reserved_tokens} reserved "
                             f"by calls in flight and about {tokens} needed by this call, "
                             f"limit {self.max_tokens}")
            if self.max_cost is not None and s.cost + self._reserved_cost + cost > self.max_cost:
                self._refuse("max_cost", f"${s.cost:.6f} spent, ${self._reserved_cost:.6f} reserved by "
                             f"calls in flight and about ${cost:.6f} needed by this call, "
                             f"limit ${self.max_cost}")
            self._reserved_calls += calls
            self._reserved_tokens += tokens
            self._reserved_cost += cost
            return Reservation(self, calls, tokens, cost)

    def _refuse(self, limit: str, detail: str) -> None:
        # called with the lock held
        from honing.lm.usage import report_refusal

        message = f"budget {limit} would be passed ({detail}); the call was not sent"
        report_refusal(message)
        raise BudgetExceeded(message, spent=self._spent, limit=limit)

    def _free(self, r: Reservation) -> None:
        self._reserved_calls -= r.calls
        self._reserved_tokens -= r.tokens
        self._reserved_cost -= r.cost
        r.open = False

    def settle(self, reservation: Reservation, actual: Usage) -> None:
        """Replace the reservation by the usage the call really had (idempotent per reservation)."""
        self._check_owner(reservation)
        with self._lock:
            if not reservation.open:
                return
            self._free(reservation)
            self._spent = self._spent + actual

    def release(self, reservation: Reservation, *, sent: bool) -> None:
        """Drop a reservation; a call that was `sent` (and failed) still counts as one call."""
        self.settle(reservation, Usage(calls=reservation.calls) if sent else Usage())

    def charge(self, usage: Usage) -> None:
        """Add usage that needed no reservation (cache hits)."""
        with self._lock:
            self._spent = self._spent + usage

    def _check_owner(self, reservation: Reservation) -> None:
        if reservation.budget is not self:
            raise ValueError("this reservation belongs to another budget")


def reserve_all(budgets: Sequence[Budget], *, calls: int = 1, tokens: int = 0,
                cost: float = 0.0) -> list[Reservation]:
    """Reserve in every budget, or in none (a refusal releases the ones already made)."""
    made: list[Reservation] = []
    try:
        for budget in budgets:
            made.append(budget.reserve(calls=calls, tokens=tokens, cost=cost))
    except BaseException:
        for r in made:
            r.budget.release(r, sent=False)
        raise
    return made


def effective_budgets(*candidates: Budget | None) -> list[Budget]:
    """The distinct budgets among `candidates` (an LM's own and the one in settings), in order."""
    out: list[Budget] = []
    for b in candidates:
        if b is not None and all(b is not o for o in out):
            if not isinstance(b, Budget):
                raise TypeError(f"a budget must be a honing Budget, not {type(b).__name__}")
            out.append(b)
    return out
