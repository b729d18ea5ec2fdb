"""What an optimizer writes into the program it compiled: enough to audit and reproduce the run."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class OptimizerRecord:
    """The optimizer's name and parameters, its seed, the scores it measured and what it spent.

    `score` is the chosen program's score on the selection set (a fraction in [0, 1]) when the optimizer
    measured one. `candidates` lists every candidate or trial it evaluated (score, settings, usage), so a
    user can see what was tried. `budget_limited` is True when a Budget ran out and this is the best
    program found before that. `errors` counts examples that failed during the compile.
    """

    name: str
    parameters: dict[str, Any] = attrs.Factory(dict)
    seed: int | None = None
    score: float | None = None
    scores: dict[str, float] = attrs.Factory(dict)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cache_hits: int = 0
    wall_time: float = 0.0
    errors: int = 0
    budget_limited: bool = False
    candidates: tuple[dict[str, Any], ...] = ()
    notes: tuple[str, ...] = ()
    distribution: str | None = None
    version: str | None = None
