"""honing-ensemble: one program that runs several compiled programs and votes on their predictions."""

from __future__ import annotations

from typing import Any

import honing

from honing_ensemble.ensemble import REDUCERS, Ensemble, EnsembleProgram, majority

__all__ = ["REDUCERS", "Ensemble", "EnsembleProgram", "majority"]


@honing.hookimpl
def register_optimizers(register: Any) -> None:
    register(Ensemble)
