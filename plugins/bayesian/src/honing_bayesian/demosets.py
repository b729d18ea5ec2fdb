"""Candidate demo sets for `BayesianSignatureOptimizer`, made with the core's shared bootstrapping.

Per predictor, `n` sets (fewer when some come out identical), in this order:

0. ``student``: the demos the student already has (usually none), so that configuration 0 is the
   student itself;
1. ``labeled``: `max_labeled_demos` labelled training examples (when > 0);
2. ``bootstrap``: a bootstrap pass over the trainset in its order, topped up with labelled examples;
3. ``shuffle_k``: bootstrap passes over seeded shuffles, each with a random number (1 …
   `max_bootstrapped_demos`) of bootstrapped demos, topped up with labelled examples.

A set holds at most ``max(max_bootstrapped_demos, max_labeled_demos)`` demos: its bootstrapped demos,
then labelled ones up to `max_labeled_demos` in all (the few-shot family's convention). Every random
choice comes from its own stream seeded by (seed, predictor/set, purpose) — never one shared RNG whose
draws depend on each other's order (reference §13.6). With both maxima 0 only set 0 exists.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs
from honing.plugin_api import (
    Bootstrap,
    Demos,
    Example,
    Module,
    assemble,
    bootstrap_demos,
    effective_max_errors,
    make_teacher,
    settings,
)


@attrs.frozen
class DemoSet:
    """One candidate demo set for every predictor, and how it was made."""

    key: str
    demos: Demos
    bootstrapped: int = 0
    errors: int = 0


def build_demo_sets(program: Module, trainset: list[Example], teacher: Module | None,
                    metric: Callable[..., Any] | None, *, n: int, max_bootstrapped_demos: int,
                    max_labeled_demos: int, seed: Any, task_lm: Any, max_errors: int | None = None,
                    on_progress: Callable[[], None] | None = None) -> list[DemoSet]:
    """Up to `n` distinct demo sets (set 0 is the student's own demos). See the module docstring."""
    student = DemoSet("student", {name: [dict(d) for d in p.demos] for name, p in program.named_predictors()})
    sets = [student]
    if max_bootstrapped_demos == 0 and max_labeled_demos == 0:
        return sets
    teacher_program = make_teacher(program, trainset, teacher, max_labeled_demos=max_labeled_demos, seed=seed)
    specs: list[tuple[str, int, list[int] | None]] = []  # (key, bootstrap size, order)
    if max_labeled_demos > 0:
        specs.append(("labeled", 0, None))
    if max_bootstrapped_demos > 0:
        specs.append(("bootstrap", max_bootstrapped_demos, None))
    k = 0
    while len(specs) < n - 1:
        if max_bootstrapped_demos > 0:
            size = random.Random(f"{seed}:shuffle_{k}:size").randint(1, max_bootstrapped_demos)
            order = list(range(len(trainset)))
            random.Random(f"{seed}:shuffle_{k}:order").shuffle(order)
            specs.append((f"shuffle_{k}", size, order))
        else:
            specs.append((f"labeled_{k}", 0, None))
        k += 1
    seen = {_fingerprint(student.demos)}
    for key, size, order in specs[:max(0, n - 1)]:
        boot: Bootstrap | None = None
        if size > 0:
            with settings.context(lm=task_lm):
                boot = bootstrap_demos(teacher_program, trainset, metric, max_demos=size, order=order,
                                       max_errors=effective_max_errors(max_errors))
        demos = assemble(program, trainset, boot, max_bootstrapped_demos=size,
                         max_labeled_demos=max_labeled_demos, seed=f"{seed}:{key}")
        fingerprint = _fingerprint(demos)
        if fingerprint not in seen:
            seen.add(fingerprint)
            sets.append(DemoSet(key, demos, len(boot.used) if boot else 0, boot.errors if boot else 0))
        if on_progress is not None:
            on_progress()
    return sets


def _fingerprint(demos: Demos) -> str:
    import json

    return json.dumps({n: [{k: v for k, v in d.items() if not k.startswith("_")} for d in ds]
                       for n, ds in demos.items()}, sort_keys=True, default=str)


def demo_ids(demos: list[dict[str, Any]]) -> list[str]:
    """A readable id per demo: where it came from and its trainset index (``bootstrap#12``)."""
    return [f"{d.get('_source', 'given')}#{d.get('_example', '?')}" for d in demos]
