"""Usage trackers: thread-safe sums of `Usage` that a block of code can open and read.

Every LM call reports its usage to the LM's own tracker and to every tracker opened by `track_usage()`
around it (Evaluate and optimizers open one per run), so "per LM" and "per run" accounting agree.
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

    def add(self, usage: Usage) -> None:
        with self._lock:
            self._total = self._total + usage

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
