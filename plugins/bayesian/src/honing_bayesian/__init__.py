"""honing-bayesian: the optimizers that rewrite instructions.

- `SignatureOptimizer`: coordinate ascent over each predictor's instruction; a prompt model proposes
  rewrites, each scored on the valset.
- `BayesianSignatureOptimizer`: instruction candidates (from a grounded proposer) x demo sets (from the
  core's bootstrapping) per predictor, searched with seeded TPE on an Optuna study that can live in
  PostgreSQL and be shared by several workers.
"""

from __future__ import annotations

from typing import Any

import honing

from honing_bayesian.bayesian import BayesianSignatureOptimizer
from honing_bayesian.bayesian_settings import AUTO_PRESETS
from honing_bayesian.coordinate import SignatureOptimizer
from honing_bayesian.plan import Plan
from honing_bayesian.text import clean_proposal

__all__ = ["AUTO_PRESETS", "BayesianSignatureOptimizer", "Plan", "SignatureOptimizer", "clean_proposal"]


@honing.hookimpl
def register_optimizers(register: Any) -> None:
    register(SignatureOptimizer)
    register(BayesianSignatureOptimizer)
