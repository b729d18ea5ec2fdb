"""Usage trackers: thread-safe sums of `Usage` that a block of code can open and read.

Every LM call reports its usage to the LM's own tracker and to every tracker opened by `track_usage()`
around it (Evaluate and optimizers open one per run), so "per LM" and "per run" accounting agree.
A call a Budget refused is reported too (`refusals`), so a compile knows its budget ran out even when
the optimizer caught the `BudgetExceeded` and carried on with what it had.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from honing import settings
from honing.lm.types import Usage


class UsageTracker:
    """A running total of `Usage`, safe to add to from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = Usage()
        self._refusals = 0
        self.last_refusal: str | None = None

    def add(self, usage: Usage) -> None:
        with self._lock:
            self._total = self._total + usage

    def refused(self, message: str) -> None:
        with self._lock:
            self._refusals += 1
            self.last_refusal = message

    @property
    def refusals(self) -> int:
        """Calls a Budget refused to send inside the block."""
        with self._lock:
            return self._refusals

    @property
    def total(self) -> Usage:
        with self._lock:
            return self._total


@contextlib.contextmanager
def track_usage() -> Iterator[UsageTracker]:
    """Sum the usage of every LM call made inside the block (including honing's worker threads)."""
    tracker = UsageTracker()
    with settings._pushed("usage_trackers", tracker):
        yield tracker


def report_usage(usage: Usage) -> None:
    """Add `usage` to every tracker open in the current context."""
    for tracker in settings.current().usage_trackers:
        tracker.add(usage)


def report_refusal(message: str) -> None:
    """Tell every tracker open in the current context that a Budget refused a call."""
    for tracker in settings.current().usage_trackers:
        tracker.refused(message)
