"""Demos shared by every optimizer family: labelled demos sampled from a trainset, demos
bootstrapped from the traces of a teacher program whose runs pass the metric, the default teacher
(the student with labelled demos), one candidate's demos assembled from a bootstrap pass and a
labelled fill, and `build_demos`, which does both for one candidate and logs it so a resumed run takes
a finished bootstrap from its log.

A demo is a plain dict of one predictor's field values. Keys starting with "_" are bookkeeping that
never reaches a prompt: `_source` ("labeled" or "bootstrap") and `_example` (the trainset index it
came from), so a record can always say where a demo came from.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from honing import settings, tracing
from honing.data import Example
from honing.errors import BudgetExceeded, ConfigurationError, TooManyErrors
from honing.evaluate import metric_score
from honing.jsontext import json_safe
from honing.lm.types import Usage
from honing.lm.usage import track_usage
from honing.modules import Module, Predict, named_calls
from honing.optimizers.kit.checks import effective_max_errors
from honing.runs import RunLog

Demos = dict[str, list[dict[str, Any]]]
#: How many demos: one number for every predictor, or one per predictor name (e.g. what fits each context).
DemoCount = int | Mapping[str, int]


def count_for(k: DemoCount, name: str) -> int:
    """`k` for the predictor `name` (a mapping without that name means 0)."""
    return int(k.get(name, 0)) if isinstance(k, Mapping) else int(k)

log = logging.getLogger("honing.optimizers")


def labeled_demos(predictor: Predict, examples: Sequence[Example]) -> list[dict[str, Any]]:
    """The examples that can teach this predictor (one of its inputs and one of its outputs),
    reduced to its fields and copied, so a demo never aliases a training example."""
    names = [f.name for f in predictor.signature.fields]
    inputs = {f.name for f in predictor.signature.input_fields}
    outputs = {f.name for f in predictor.signature.output_fields}
    demos = []
    for index, example in enumerate(examples):
        if inputs & set(example) and outputs & set(example):
            demos.append({**{n: example[n] for n in names if n in example}, "_source": "labeled",
                          "_example": index})
    return demos


def predictor_rng(seed: Any, name: str, purpose: str = "") -> random.Random:
    """An independent RNG per (seed, predictor, purpose): adding a predictor changes no other's draws."""
    return random.Random(f"{seed}:{name}:{purpose}")


def sample_labeled(program: Module, trainset: Sequence[Example], k: DemoCount, *, seed: Any = 0,
                   sample: bool = True, exclude: Sequence[int] = ()) -> dict[str, list[dict[str, Any]]]:
    """Up to `k` labelled demos per predictor, skipping trainset indices in `exclude`."""
    excluded = set(exclude)
    out = {}
    for name, predictor in program.named_predictors():
        pool = [d for d in labeled_demos(predictor, trainset) if d["_example"] not in excluded]
        n = count_for(k, name)
        if sample:
            out[name] = predictor_rng(seed, name, "labeled").sample(pool, min(n, len(pool)))
        else:
            out[name] = pool[:n]
    return out


def passes(score: float, threshold: float | None) -> bool:
    """A run passes when its score reaches `threshold` (0 is a real threshold), or is truthy without one."""
    return score >= threshold if threshold is not None else bool(score)


@attrs.frozen
class Bootstrap:
    """What a bootstrap pass produced: per predictor demos, and how it went."""

    demos: dict[str, list[dict[str, Any]]]
    #: trainset indices whose runs passed and became demos, in the order visited
    used: tuple[int, ...]
    attempts: int
    errors: int
    #: trainset index → why it did not become a demo ("failed metric", or the error text)
    failures: dict[int, str]


def bootstrap_demos(teacher: Module, trainset: Sequence[Example], metric: Callable[..., Any] | None, *,
                    max_demos: int, max_rounds: int = 1, metric_threshold: float | None = None,
                    max_errors: int | None = None, order: Sequence[int] | None = None,
                    retry_temperature: float = 0.7) -> Bootstrap:
    """Run `teacher` over trainset examples (in `order`) until `max_demos` runs pass the metric.

    Every predictor call in a passing run becomes a demo for that predictor (a multi-stage program gets
    one demo per stage from one run). The example itself is hidden from the teacher's demos while it
    runs, so a demo never answers its own question. Round r > 0 retries a failure with a fresh sample
    (temperature `retry_temperature`, a new rollout id, so the cache does not return the same failure).
    Errors are counted; the (max_errors + 1)-th raises TooManyErrors carrying what was bootstrapped.
    A BudgetExceeded propagates with `.partial` set to what was bootstrapped before it.
    """
    names = {id(p): n for n, p in teacher.named_predictors()}
    demos: dict[str, list[dict[str, Any]]] = {n: [] for n in names.values()}
    used: list[int] = []
    failures: dict[int, str] = {}
    attempts = errors = 0
    indices = list(order) if order is not None else list(range(len(trainset)))
    for index in indices:
        if len(used) >= max_demos:
            break
        example = trainset[index]
        for round_ in range(max_rounds):
            attempts += 1
            try:
                records, score = _run_hidden(teacher, example, metric, round_, retry_temperature)
            except BudgetExceeded as exc:
                # what was bootstrapped before the budget ran out stays usable
                exc.partial = Bootstrap(demos, tuple(used), attempts, errors, failures)
                raise
            except (ConfigurationError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - counted, not fatal, until max_errors
                errors += 1
                failures[index] = f"{type(exc).__name__}: {exc}"
                if max_errors is not None and errors > max_errors:
                    partial = Bootstrap(demos, tuple(used), attempts, errors, failures)
                    raise TooManyErrors(f"bootstrapping: {errors} examples failed (max_errors={max_errors}); "
                                        f"last at trainset[{index}]: {exc}", partial=partial) from exc
                continue
            if passes(score, metric_threshold):
                for record in records:
                    name = names.get(id(record.predictor))
                    if name is not None:
                        demos[name].append({**record.as_demo(), "_source": "bootstrap", "_example": index})
                used.append(index)
                failures.pop(index, None)
                break
            failures[index] = "failed metric"
    return Bootstrap(demos, tuple(used), attempts, errors, failures)


def make_teacher(program: Module, trainset: Sequence[Example], teacher: Module | None, *,
                 max_labeled_demos: DemoCount, seed: Any) -> Module:
    """The program whose passing runs become demos.

    Default: a copy of the student with `max_labeled_demos` labelled demos per predictor. A given
    teacher (same predictors and fields as the student; checked by `Optimizer.validate`) is copied and
    keeps its demos; only its predictors without any get labelled ones.
    """
    result = teacher.deepcopy() if teacher is not None else program.deepcopy()
    if teacher is None:
        for predictor in result.predictors():
            predictor.demos = []
    if any(count_for(max_labeled_demos, name) > 0 for name, _ in result.named_predictors()):
        labelled = sample_labeled(result, trainset, max_labeled_demos, seed=f"{seed}:teacher")
        for name, predictor in result.named_predictors():
            if not predictor.demos:
                predictor.demos = labelled[name]
    return result


def assemble(program: Module, trainset: Sequence[Example], boot: Bootstrap | None, *, max_bootstrapped_demos: int,
             max_labeled_demos: DemoCount, seed: Any) -> Demos:
    """Each predictor's bootstrapped demos (at most `max_bootstrapped_demos`), then labelled examples up
    to `max_labeled_demos` in all (`boot` None: labelled examples only).

    The labelled fill comes from every trainset example not bootstrapped; each predictor samples that
    whole pool with its own seeded RNG (a later predictor does not sample from an earlier one's sample).
    """
    fill = sample_labeled(program, trainset, max_labeled_demos, seed=seed, exclude=boot.used if boot else ())
    out: Demos = {}
    for name, _ in program.named_predictors():
        booted = [dict(d) for d in (boot.demos.get(name, []) if boot else [])][:max_bootstrapped_demos]
        n_labeled = max(0, count_for(max_labeled_demos, name) - len(booted))
        out[name] = [*booted, *fill[name][:n_labeled]]
    return out


def _run_hidden(teacher: Module, example: Example, metric: Callable[..., Any] | None, round_: int,
                retry_temperature: float) -> tuple[list[tracing.TraceRecord], float]:
    """Run the teacher on one example with that example hidden from its demos; return trace and score."""
    program = teacher.deepcopy()
    target = {k: example[k] for k in example}
    for predictor in program.predictors():
        predictor.demos = [d for d in predictor.demos
                           if {k: v for k, v in d.items() if not k.startswith("_")} != _subset(target, d)]
    overrides: dict[str, Any] = {}
    if round_ > 0:
        overrides["sampling"] = {"temperature": retry_temperature, "rollout": round_}
    with settings.context(**overrides), tracing.trace() as trace, named_calls(program):
        prediction = program(**example.inputs())
    # map the copy's predictors back to the teacher's, so callers can name them
    by_copy = {id(p): orig for p, orig in zip(program.predictors(), teacher.predictors())}
    records = [attrs.evolve(r, predictor=by_copy.get(id(r.predictor), r.predictor)) for r in trace.records]
    score = metric_score(metric, example, prediction, records) if metric is not None else 1.0
    return records, score


def _subset(example: dict[str, Any], demo: dict[str, Any]) -> dict[str, Any]:
    keys = [k for k in demo if not k.startswith("_")]
    return {k: example.get(k, object()) for k in keys}


def demo_count(state: Any) -> int:
    """Demos over all predictors of a `program_state` (or of a {name: demos} dict)."""
    total = 0
    for value in state.values():
        total += len(value.get("demos", [])) if isinstance(value, dict) else len(value)
    return total


# ----------------------------------------------------------------------------------------------------
# one candidate's demos, logged

@attrs.frozen
class BuiltDemos:
    """What `build_demos` made: demos per predictor, the bootstrap pass behind them and its cost."""

    demos: Demos
    used: tuple[int, ...] = ()
    attempts: int = 0
    errors: int = 0
    failures: dict[int, str] = attrs.Factory(dict)
    usage: Usage = attrs.Factory(Usage)
    from_log: bool = False
    #: set when a budget ran out during the bootstrap: these demos are what was made before it
    budget_limited: bool = False

    def summary(self) -> dict[str, Any]:
        return {"bootstrapped": len(self.used), "attempts": self.attempts, "errors": self.errors,
                "calls": self.usage.calls, "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens, "cost": self.usage.cost,
                "cache_hits": self.usage.cache_hits}


def build_demos(program: Module, trainset: Sequence[Example], teacher: Module, metric: Callable[..., Any] | None,
                *, key: str, params: dict[str, Any], max_bootstrapped_demos: int, max_labeled_demos: DemoCount,
                seed: Any, order: Sequence[int] | None = None, max_rounds: int = 1,
                metric_threshold: float | None = None, max_errors: int | None = None,
                teacher_settings: dict[str, Any] | None = None, run_log: RunLog | None = None) -> BuiltDemos:
    """One bootstrap pass over `trainset` (in `order`) and the labelled fill, logged as a "bootstrap"
    event under `key`; a resumed run with the same `params` takes it from the log instead.

    A BudgetExceeded during the pass returns what was bootstrapped before it (`budget_limited=True`) when
    at least one run passed; otherwise it propagates.
    """
    if run_log is not None:
        logged = run_log.finished("bootstrap").get(key)
        if logged is not None and logged.get("params") == json_safe(params):
            return BuiltDemos({n: [dict(d) for d in ds] for n, ds in logged["demos"].items()},
                              tuple(logged.get("used", ())), int(logged.get("attempts", 0)),
                              int(logged.get("errors", 0)), {}, Usage(), from_log=True)
    budget_limited = False
    with track_usage() as tracker:
        try:
            with settings.context(**dict(teacher_settings or {})):
                boot = bootstrap_demos(teacher, trainset, metric, max_demos=max_bootstrapped_demos,
                                       max_rounds=max_rounds, metric_threshold=metric_threshold,
                                       max_errors=effective_max_errors(max_errors), order=order)
        except BudgetExceeded as exc:
            partial: Bootstrap | None = getattr(exc, "partial", None)
            if partial is None or not partial.used:
                raise
            boot, budget_limited = partial, True
    demos = assemble(program, trainset, boot, max_bootstrapped_demos=max_bootstrapped_demos,
                     max_labeled_demos=max_labeled_demos, seed=seed)
    built = BuiltDemos(demos, boot.used, boot.attempts, boot.errors, dict(boot.failures), tracker.total,
                       budget_limited=budget_limited)
    if run_log is not None and not budget_limited:
        run_log.event("bootstrap", key=key, params=json_safe(params), demos=json_safe(demos), used=list(boot.used),
                      attempts=boot.attempts, errors=boot.errors,
                      failures={str(k): v for k, v in list(boot.failures.items())[:20]},
                      usage=tracker.total.to_dict())
    return built


def shortfall_note(built: BuiltDemos, max_bootstrapped_demos: int, n_train: int, where: str = "") -> str | None:
    """Say so when fewer demos could be bootstrapped than asked for (the rest are labelled examples)."""
    if built.from_log or built.budget_limited or len(built.used) >= max_bootstrapped_demos:
        return None
    failed = sum(1 for v in built.failures.values() if v == "failed metric")
    return (f"{where}bootstrapped {len(built.used)} of max_bootstrapped_demos={max_bootstrapped_demos}: "
            f"all {n_train} training examples were tried ({failed} failed the metric, {built.errors} errors); "
            "the other slots hold labelled examples")
