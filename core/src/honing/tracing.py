"""Traces: a record of every predictor call made inside ``with hn.trace() as t:``.

Optimizers bootstrap demos from exactly these records: a call whose program run passed the metric
becomes a demo for the predictor that made it. Traces nest (each open trace sees the calls inside it)
and follow work into honing's worker threads through the settings context.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import attrs

from honing import settings


@attrs.frozen
class TraceRecord:
    """One predictor call: the predictor's dotted name, the object, its inputs and its outputs."""

    predictor_name: str
    predictor: Any = attrs.field(eq=False, repr=False)
    inputs: dict[str, Any]
    outputs: dict[str, Any]

    def as_demo(self) -> dict[str, Any]:
        """Inputs then outputs, as one demo record."""
        return {**self.inputs, **self.outputs}


class Trace:
    """The records of one `trace()` block, in call order (bounded: the oldest are dropped)."""

    def __init__(self, max_records: int = 10_000) -> None:
        self._records: list[TraceRecord] = []
        self._lock = threading.Lock()
        self.max_records = max_records

    def add(self, record: TraceRecord) -> None:
        with self._lock:
            self._records.append(record)
            if len(self._records) > self.max_records:
                del self._records[0]

    @property
    def records(self) -> list[TraceRecord]:
        with self._lock:
            return list(self._records)

    def __iter__(self) -> Iterator[TraceRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)


@contextlib.contextmanager
def trace(max_records: int = 10_000) -> Iterator[Trace]:
    """Record every predictor call inside the block: ``with hn.trace() as t: program(...)``."""
    recorder = Trace(max_records)
    with settings._pushed("trace_stack", recorder):
        yield recorder


def record_call(predictor_name: str, predictor: Any, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Called by Predict after each successful call; a no-op when no trace is open."""
    stack = settings.current().trace_stack
    if not stack:
        return
    record = TraceRecord(predictor_name, predictor, dict(inputs), dict(outputs))
    for recorder in stack:
        recorder.add(record)
