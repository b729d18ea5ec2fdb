"""Evaluate: run a program over a devset and score it with a metric.

Scores are fractions in [0, 1] (never percentages). An example whose call, parse or metric fails scores
`failure_score`, keeps its error message, and counts towards `max_errors`: a run tolerates that many
failures and stops at the next one, raising `TooManyErrors` that carries every finished result.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from tqdm.auto import tqdm

from honing import settings
from honing.data import Example, Prediction
from honing.errors import BudgetExceeded, ConfigurationError, InputError, MetricError, TooManyErrors
from honing.lm.types import Usage
from honing.lm.usage import track_usage
from honing.modules import Module

logger = logging.getLogger(__name__)

Metric = Callable[..., Any]


@attrs.frozen
class ExampleResult:
    """One example's outcome: its prediction (None on error), score and error message."""

    index: int
    example: Example
    prediction: Prediction | None
    score: float
    error: str | None = None


@attrs.frozen
class EvaluationResult:
    """`score` is the mean over all examples (failures count as `failure_score`), in [0, 1]."""

    score: float
    results: tuple[ExampleResult, ...] = attrs.field(converter=tuple)
    n_errors: int = 0
    usage: Usage = Usage()
    wall_time: float = 0.0

    @property
    def errors(self) -> list[ExampleResult]:
        return [r for r in self.results if r.error is not None]


def metric_score(metric: Metric, example: Example, prediction: Prediction, trace: Any = None,
                 *, index: int | None = None) -> float:
    """Call a metric and turn its value into a float; a bad return value is a clear error."""
    value = metric(example, prediction, trace) if trace is not None else metric(example, prediction)
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    where = f" on example {index}" if index is not None else ""
    if isinstance(value, (int, float)) and math.isfinite(value):
        if not 0.0 <= value <= 1.0:
            raise MetricError(f"metric {metric_name(metric)} returned {value!r}{where}: honing scores are fractions "
                              "in [0, 1] (return a bool, or e.g. 0.5 rather than 50)")
        return float(value)
    raise MetricError(f"metric {metric_name(metric)} returned {type(value).__name__} {value!r:.60}{where}; "
                      "expected a bool or a number in [0, 1]")


def metric_name(metric: Metric) -> str:
    return getattr(metric, "__qualname__", None) or getattr(metric, "__name__", None) or repr(metric)


def run_example(program: Module, example: Example, metric: Metric, index: int,
                failure_score: float = 0.0) -> ExampleResult:
    """Run and score one example; every failure becomes this example's recorded error.

    BudgetExceeded and configuration errors are not the example's fault and propagate instead.
    """
    try:
        prediction = program(**example.inputs())
    except (BudgetExceeded, ConfigurationError, KeyboardInterrupt):
        raise
    except InputError as exc:
        return ExampleResult(index, example, None, failure_score, f"example {index}: {exc}")
    except Exception as exc:  # noqa: BLE001 - recorded per example, counted against max_errors
        return ExampleResult(index, example, None, failure_score, f"{type(exc).__name__}: {exc}")
    try:
        score = metric_score(metric, example, prediction, index=index)
    except MetricError as exc:
        return ExampleResult(index, example, prediction, failure_score, str(exc))
    except Exception as exc:  # noqa: BLE001
        return ExampleResult(index, example, prediction, failure_score,
                             f"metric {metric_name(metric)} raised {type(exc).__name__} on example {index}: {exc}")
    return ExampleResult(index, example, prediction, score)


class Evaluate:
    """``Evaluate(devset=..., metric=..., num_threads=4, display_progress=True)(program)``."""

    def __init__(self, *, devset: Sequence[Example], metric: Metric, num_threads: int | None = None,
                 display_progress: bool = False, max_errors: int | None = None, failure_score: float = 0.0,
                 desc: str = "evaluate") -> None:
        if not callable(metric):
            raise TypeError(f"metric must be callable, got {type(metric).__name__}")
        for i, example in enumerate(devset):
            if not isinstance(example, Example):
                raise InputError(f"devset[{i}] is a {type(example).__name__}, expected hn.Example(...).with_inputs(...)")
            if example.input_keys is None:
                raise InputError(f"devset[{i}] has no input keys; build it with .with_inputs('field', ...)")
        self.devset = list(devset)
        self.metric = metric
        self.num_threads = num_threads
        self.display_progress = display_progress
        self.max_errors = max_errors
        self.failure_score = failure_score
        self.desc = desc

    def __call__(self, program: Module, *, position: int | None = None) -> EvaluationResult:
        current = settings.current()
        num_threads = self.num_threads or current.num_threads or 1
        max_errors = self.max_errors if self.max_errors is not None else current.max_errors
        results: list[ExampleResult | None] = [None] * len(self.devset)
        lock = threading.Lock()
        n_errors = 0
        started = time.perf_counter()
        bar = tqdm(total=len(self.devset), desc=self.desc, disable=not self.display_progress, leave=position is None,
                   position=position, dynamic_ncols=True)

        def work(index: int) -> ExampleResult:
            return run_example(program, self.devset[index], self.metric, index, self.failure_score)

        with track_usage() as tracker:
            try:
                _prefetch(program, self.devset)
                for future in settings.map_in_threads(work, range(len(self.devset)), num_threads):
                    result = future.result()
                    with lock:
                        results[result.index] = result
                        if result.error is not None:
                            n_errors += 1
                        done = [r for r in results if r is not None]
                        bar.update(1)
                        if self.display_progress:
                            bar.set_postfix(score=f"{sum(r.score for r in done) / len(done):.3f}", errors=n_errors)
                    if max_errors is not None and n_errors > max_errors:
                        partial = self._result([r for r in results if r is not None], n_errors, tracker.total, started)
                        raise TooManyErrors(
                            f"{n_errors} examples failed (max_errors={max_errors}); last: {result.error}",
                            partial=partial)
            finally:
                bar.close()
        return self._result([r for r in results if r is not None], n_errors, tracker.total, started,
                            total=len(self.devset))

    def _result(self, results: list[ExampleResult], n_errors: int, usage: Usage, started: float,
                total: int | None = None) -> EvaluationResult:
        denominator = total if total is not None else max(len(results), 1)
        score = sum(r.score for r in results) / denominator if denominator else 0.0
        return EvaluationResult(score, sorted(results, key=lambda r: r.index), n_errors, usage,
                                time.perf_counter() - started)


def _prefetch(program: Module, devset: Sequence[Example]) -> None:
    """Let the program batch what it can ahead of the calls (`Module.prefetch`). A failure here is not
    fatal: each example then meets it again in its own call and it is counted there."""
    try:
        program.prefetch([example.inputs() for example in devset])
    except (BudgetExceeded, ConfigurationError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - the per-example calls report it
        logger.debug("prefetch failed (%s); the examples run without it", exc)
