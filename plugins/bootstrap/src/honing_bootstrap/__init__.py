"""honing-bootstrap: few-shot demos bootstrapped from a teacher's runs that pass the metric.

- `BootstrapFewShot`: one bootstrap pass, topped up with labelled examples.
- `BootstrapFewShotWithRandomSearch`: many such candidates (zero-shot, labelled-only, shuffled
  bootstraps of random size), each scored on the valset; the best is kept.
- `BootstrapFewShotWithOptuna`: a seeded Optuna TPE study choosing each predictor's demo set;
  resumable through an Optuna storage.
"""

from __future__ import annotations

from typing import Any

import honing

from honing_bootstrap.fewshot import BootstrapFewShot
from honing_bootstrap.optuna_search import BootstrapFewShotWithOptuna
from honing_bootstrap.random_search import BootstrapFewShotWithRandomSearch

__all__ = ["BootstrapFewShot", "BootstrapFewShotWithOptuna", "BootstrapFewShotWithRandomSearch"]


@honing.hookimpl
def register_optimizers(register: Any) -> None:
    register(BootstrapFewShot)
    register(BootstrapFewShotWithRandomSearch)
    register(BootstrapFewShotWithOptuna)
