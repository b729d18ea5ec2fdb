"""LabeledFewShot: use labelled training examples, as they are, as each predictor's demos."""

from __future__ import annotations

from typing import Any

import attrs
import honing
from honing.plugin_api import (
    CompileRun,
    DemoCount,
    Module,
    Optimizer,
    count,
    fit_demos,
    labeled_demos,
    sample_labeled,
    setting,
)


class LabeledFewShot(Optimizer):
    """Labelled training examples as few-shot demos (k per predictor, sampled with a seed)."""

    requires_labels = True

    @attrs.frozen
    class Settings:
        """
        :param k: demos per predictor (every usable example when there are fewer). None: every usable
            training example that fits the predictor's prompt with room for the query and its answer,
            measured with the model's tokenizer (small models gain most from as many demos as fit).
        :param sample: sample `k` with the seed; False takes the first `k` in trainset order.
        :param seed: seeds the sample.
        :param metric: not used to choose demos; accepted so every optimizer takes one.
        """

        k: int | None = setting(16, check=count(optional=True, wording="a non-negative integer"))
        sample: bool = setting(True, kw_only=True)
        seed: int = setting(0, kw_only=True)
        metric: Any = setting(None, kw_only=True, recorded=False)

    def optimize(self, program: Module, run: CompileRun) -> Module:
        k: DemoCount | None = self.settings.k
        if k is None:
            fit = fit_demos(program, run.trainset)
            for note in fit.notes():
                run.note(note)
            k = fit.counts
        chosen = sample_labeled(program, run.trainset, k, seed=self.seed, sample=self.settings.sample)
        for name, predictor in program.named_predictors():
            usable = len(labeled_demos(predictor, run.trainset))
            if usable == 0:
                run.note(f"predictor {name!r}: no training example has both its inputs and outputs; no demos")
            elif isinstance(k, int) and k > usable:
                run.note(f"predictor {name!r}: k={k} but only {usable} usable examples; using all")
            predictor.demos = chosen[name]
        return program


@honing.hookimpl
def register_optimizers(register: Any) -> None:
    register(LabeledFewShot)
