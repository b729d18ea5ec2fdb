"""LabeledFewShot: use labelled training examples, as they are, as each predictor's demos."""

from __future__ import annotations

from typing import Any

import honing
from honing.data import Example
from honing.modules import Module
from honing.optimizers.demos import labeled_demos, sample_labeled


class LabeledFewShot(honing.Optimizer):
    """Labelled training examples as few-shot demos (k per predictor, sampled with a seed)."""

    requires_labels = True

    def __init__(self, k: int = 16, *, sample: bool = True, seed: int = 0, metric: Any = None) -> None:
        if not isinstance(k, int) or k < 0:
            raise honing.OptimizerError(f"LabeledFewShot: k must be a non-negative integer, got {k!r}")
        super().__init__(metric, k=k, sample=sample, seed=seed)
        self.k, self.sample = k, sample

    def optimize(self, program: Module, *, trainset: list[Example], valset: Any = None, teacher: Any = None,
                 **_: Any) -> Module:
        chosen = sample_labeled(program, trainset, self.k, seed=self.seed, sample=self.sample)
        for name, predictor in program.named_predictors():
            usable = len(labeled_demos(predictor, trainset))
            if usable == 0:
                self.note(f"predictor {name!r}: no training example has both its inputs and outputs; no demos")
            elif self.k > usable:
                self.note(f"predictor {name!r}: k={self.k} but only {usable} usable examples; using all")
            predictor.demos = chosen[name]
        return program


@honing.hookimpl
def register_optimizers(register: Any) -> None:
    register(LabeledFewShot)
