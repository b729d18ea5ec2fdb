"""LabeledFewShot: use labelled training examples, as they are, as each predictor's demos."""

from __future__ import annotations

import random
from typing import Any

import honing
from honing.data import Example
from honing.modules import Module, Predict


def labeled_demos(predictor: Predict, examples: list[Example]) -> list[dict[str, Any]]:
    """The examples that can teach this predictor: those with one of its inputs and one of its outputs,
    reduced to its fields (copies, so a demo never aliases a training example)."""
    names = [f.name for f in predictor.signature.fields]
    inputs = {f.name for f in predictor.signature.input_fields}
    outputs = {f.name for f in predictor.signature.output_fields}
    demos = []
    for example in examples:
        if inputs & set(example) and outputs & set(example):
            demos.append({n: example[n] for n in names if n in example})
    return demos


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
        for name, predictor in program.named_predictors():
            pool = labeled_demos(predictor, trainset)
            if not pool:
                self.note(f"predictor {name!r}: no training example has both its inputs and outputs; no demos")
            if self.k > len(pool):
                self.note(f"predictor {name!r}: k={self.k} but only {len(pool)} usable examples; using all")
            if self.sample:
                # one stream per predictor, seeded by (seed, name): adding a predictor changes no other's demos
                rng = random.Random(f"{self.seed}:{name}")
                chosen = rng.sample(pool, min(self.k, len(pool)))
            else:
                chosen = pool[: self.k]
            predictor.demos = chosen
        return program


@honing.hookimpl
def register_optimizers(register: Any) -> None:
    register(LabeledFewShot)
