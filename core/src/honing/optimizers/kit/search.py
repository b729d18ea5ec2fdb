"""Scoring candidate programs, shared by every optimizer that searches (random search, Optuna, Bayesian).

Candidates are evaluated one after another, each over the valset in a fixed order: on the embedded
model consecutive prompts then share the candidate's demo prefix and llama.cpp reuses its KV cache;
with hosted LMs each candidate's examples run `num_threads` at a time. Every finished candidate is
logged (when a RunLog is given) with its score, errors, usage and state, and a resumed run takes
finished candidates from the log instead of paying for them again. A BudgetExceeded in the middle of a
search leaves the best candidate so far available (`SearchState.best`), marked budget-limited.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from tqdm.auto import tqdm

from honing.data import Example
from honing.errors import TooManyErrors
from honing.evaluate import Evaluate, EvaluationResult
from honing.jsontext import json_safe
from honing.lm.types import Usage
from honing.modules import Module
from honing.optimizers.kit.demos import demo_count
from honing.runs import RunLog


def program_state(program: Module) -> dict[str, dict[str, Any]]:
    """The searchable state of a program: instruction and demos per predictor (JSON-able)."""
    return {name: {"instructions": p.signature.instructions, "demos": [dict(d) for d in p.demos]}
            for name, p in program.named_predictors()}


def apply_state(program: Module, state: dict[str, dict[str, Any]]) -> Module:
    """Install a `program_state` into `program` (in place); returns it."""
    predictors = dict(program.named_predictors())
    for name, values in state.items():
        predictor = predictors[name]
        if values.get("instructions") is not None and values["instructions"] != predictor.signature.instructions:
            predictor.signature = predictor.signature.with_instructions(values["instructions"])
        predictor.demos = [dict(d) for d in values.get("demos", [])]
    return program


@attrs.frozen
class CandidateResult:
    """One scored candidate. `score` is a fraction in [0, 1] on the evaluation set."""

    key: str
    score: float
    n_errors: int
    usage: Usage
    wall_time: float
    params: dict[str, Any]
    state: dict[str, dict[str, Any]]
    n_examples: int = 0
    from_log: bool = False
    #: each example's score, in evaluation-set order (for paired comparisons of candidates)
    example_scores: tuple[float, ...] = attrs.field(default=(), converter=tuple)
    #: each example's prediction (None on error), kept only when the evaluator was asked to; not logged
    predictions: tuple[Any, ...] = attrs.field(default=(), converter=tuple, eq=False, repr=False)

    def summary(self) -> dict[str, Any]:
        """What goes into the compiled program's record for this candidate."""
        demos = {name: len(s.get("demos", [])) for name, s in self.state.items()}
        return {"key": self.key, "score": round(self.score, 6), "errors": self.n_errors, "params": self.params,
                "demos": demos, "calls": self.usage.calls, "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens, "cost": self.usage.cost,
                "cache_hits": self.usage.cache_hits, "wall_time": round(self.wall_time, 3)}


class SearchState:
    """The candidates scored so far and the best one.

    Without `confidence_z` the best is the highest score; on an exact tie the candidate with the larger
    `tie_break(result)` wins (e.g. more demos), and when that ties too the earlier one is kept.

    With `confidence_z` the incumbent is the candidate keyed `incumbent` (else the first scored): the one
    that should win when nothing is clearly better, e.g. the program with every demo that fits. Every
    other candidate, in the order scored, takes the current best's place only when it *clearly* beats it
    on the same examples: its net gain must reach `confidence_z` standard deviations of the per-example
    differences (`clear_gain`, a paired sign test for 0/1 scores). Ties and wins within the noise of a
    small valset keep the incumbent.
    """

    def __init__(self, tie_break: Callable[[CandidateResult], Any] | None = None, *,
                 confidence_z: float | None = None, incumbent: str | None = None) -> None:
        self.results: list[CandidateResult] = []
        self.tie_break = tie_break
        self.confidence_z = confidence_z
        self.incumbent = incumbent

    def add(self, result: CandidateResult) -> None:
        self.results.append(result)

    @property
    def best(self) -> CandidateResult | None:
        if not self.results:
            return None
        if self.confidence_z is None:
            best = self.results[0]
            for result in self.results[1:]:
                if result.score > best.score or (result.score == best.score and self.tie_break is not None
                                                 and self.tie_break(result) > self.tie_break(best)):
                    best = result
            return best
        best = next((r for r in self.results if r.key == self.incumbent), self.results[0])
        for result in self.results:
            if result is not best and self._clearly_better(result, best):
                best = result
        return best

    def _clearly_better(self, result: CandidateResult, best: CandidateResult) -> bool:
        assert self.confidence_z is not None
        if len(result.example_scores) == len(best.example_scores) > 0:
            return clear_gain(result.example_scores, best.example_scores, self.confidence_z)
        return result.score > best.score  # e.g. a result from an old log without per-example scores

    @property
    def errors(self) -> int:
        return sum(r.n_errors for r in self.results)


class CandidateEvaluator:
    """Scores candidate programs on one evaluation set with one metric, logging each as it finishes.

    `num_threads` None means the configured default (``hn.configure(num_threads=...)``).
    `keep_predictions` keeps each example's prediction on the result (e.g. to combine candidates' votes
    without calling them again); a result taken from a resumed run's log has none.
    """

    def __init__(self, devset: Sequence[Example], metric: Callable[..., Any], *, num_threads: int | None = 1,
                 max_errors: int | None = None, display_progress: bool = False, run_log: RunLog | None = None,
                 event: str = "candidate", keep_predictions: bool = False) -> None:
        self.devset = list(devset)
        self.metric = metric
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.display_progress = display_progress
        self.run_log = run_log
        self.event = event
        self.keep_predictions = keep_predictions
        self._finished = run_log.finished(event) if run_log is not None else {}

    def evaluate(self, key: str, program: Module, params: dict[str, Any] | None = None,
                 devset: Sequence[Example] | None = None) -> CandidateResult:
        """Score `program` (or take its result from a resumed run's log, spending nothing)."""
        params = dict(params or {})
        logged = self._finished.get(key)
        if logged is not None and logged.get("params") == json_safe(params):
            return CandidateResult(key, float(logged["score"]), int(logged.get("errors", 0)), Usage(),
                                   0.0, params, logged.get("state", program_state(program)),
                                   int(logged.get("n_examples", 0)), from_log=True,
                                   example_scores=logged.get("example_scores", ()))
        examples = list(devset) if devset is not None else self.devset
        started = time.perf_counter()
        evaluate = Evaluate(devset=examples, metric=self.metric, num_threads=self.num_threads,
                            max_errors=self.max_errors, display_progress=self.display_progress, desc=key)
        try:
            outcome: EvaluationResult = evaluate(program, position=1 if self.display_progress else None)
        except TooManyErrors as exc:
            if self.run_log is not None:
                self.run_log.event(f"{self.event}_failed", key=key, params=json_safe(params), error=str(exc))
            raise
        result = CandidateResult(key, outcome.score, outcome.n_errors, outcome.usage,
                                 time.perf_counter() - started, params, program_state(program), len(examples),
                                 example_scores=[r.score for r in outcome.results],
                                 predictions=[r.prediction for r in outcome.results] if self.keep_predictions else ())
        if self.run_log is not None:
            errors = [r.error for r in outcome.errors][:5]
            self.run_log.event(self.event, key=key, score=result.score, errors=result.n_errors,
                               error_samples=errors, params=json_safe(params), n_examples=len(examples),
                               usage=result.usage.to_dict(), seconds=round(result.wall_time, 3), state=result.state,
                               example_scores=list(result.example_scores))
        return result


def progress(total: int, desc: str, enabled: bool) -> Any:
    """The outer progress bar of a search (candidates or trials); Evaluate's bar nests inside it."""
    return tqdm(total=total, desc=desc, disable=not enabled, position=0, dynamic_ncols=True)


def more_demos(result: CandidateResult) -> int:
    """The usual tie-break of a search: on an exact tie the candidate with more demos wins."""
    return demo_count(result.state)


def clear_gain(candidate: Any, reference: Any, z: float) -> bool:
    """Whether per-example scores `candidate` beat `reference` (same examples, same order) clearly: the net
    gain must be positive and at least `z` standard deviations of the paired differences (for 0/1 scores:
    wins - losses >= z * sqrt(wins + losses), a one-sided sign test; z=1 is about 84%). z=0: any gain.
    Without per-example scores (e.g. an old log), the means are compared."""
    candidate, reference = list(candidate or ()), list(reference or ())
    if not candidate or len(candidate) != len(reference):
        return bool(candidate) and bool(reference) and sum(candidate) / len(candidate) > sum(reference) / len(reference)
    differences = [c - r for c, r in zip(candidate, reference, strict=True)]
    total = sum(differences)
    return total > 0 and total >= z * math.sqrt(sum(d * d for d in differences))


def gain_text(candidate: Any, reference: Any) -> str:
    """``net +3 over 11 changed examples``: how a paired comparison came out, for notes."""
    candidate, reference = list(candidate or ()), list(reference or ())
    if not candidate or len(candidate) != len(reference):
        return "no per-example scores"
    differences = [c - r for c, r in zip(candidate, reference, strict=True)]
    changed = sum(1 for d in differences if d)
    return f"net {sum(differences):+g} over {changed} changed example{'s' if changed != 1 else ''}"
