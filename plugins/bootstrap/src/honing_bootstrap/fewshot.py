"""BootstrapFewShot: run a teacher over the trainset, keep the runs that pass the metric as demos, and
top the demos up with labelled examples.

`BootstrapSettings` are the hyperparameters the whole family shares (the searches add theirs to it); the
bootstrapping itself is the core's (`honing.plugin_api.build_demos`).
"""

from __future__ import annotations

from typing import Any

import attrs
from honing.plugin_api import (
    CompileRun,
    Module,
    Optimizer,
    OptimizerRecord,
    build_demos,
    count,
    demo_count,
    labeled_demos,
    make_teacher,
    optional_number,
    setting,
    shortfall_note,
    known_settings,
    to_dict,
)



@attrs.frozen
class BootstrapSettings:
    """
    :param metric: ``metric(example, prediction, trace) -> bool | float``; a teacher run becomes demos
        when it passes. None accepts every run that does not fail.
    :param metric_threshold: a run passes when the metric reaches this value (0 is a real threshold);
        None: when the metric's value is truthy.
    :param max_bootstrapped_demos: bootstrapped demos per predictor (the pass stops once this many
        training examples have passed).
    :param max_labeled_demos: demos per predictor in all; the slots bootstrapping leaves free hold
        labelled training examples that were not bootstrapped. The default teacher (the student) also
        gets this many labelled demos. Small models want more (the searches default to every demo
        that fits the context).
    :param max_rounds: attempts per training example; later rounds ask for a fresh sample.
    :param max_errors: failed teacher runs tolerated; the next one raises TooManyErrors.
        None: ``hn.configure(max_errors=...)``, else no limit.
    :param teacher_settings: settings for the teacher runs, e.g. ``{"lm": hn.LM("openai/gpt-4o")}``.
    :param seed: seeds every labelled sample.
    """

    metric: Any = setting(None, recorded=False)
    metric_threshold: float | None = setting(None, check=optional_number, kw_only=True)
    max_bootstrapped_demos: int = setting(4, check=count(), kw_only=True)
    max_labeled_demos: int = setting(16, check=count(), kw_only=True)
    max_rounds: int = setting(1, check=count(minimum=1), kw_only=True)
    max_errors: int | None = setting(None, check=count(optional=True), kw_only=True)
    teacher_settings: dict[str, Any] = setting(None, converter=to_dict, check=known_settings,
                                               kw_only=True)
    seed: int = setting(0, kw_only=True)


class BootstrapFewShot(Optimizer):
    """Demos from a teacher's runs that pass the metric, topped up with labelled examples."""

    requires_metric = False
    requires_labels = True

    Settings = BootstrapSettings

    def optimize(self, program: Module, run: CompileRun) -> Module:
        s = self.settings
        teacher = make_teacher(program, run.trainset, run.teacher, max_labeled_demos=s.max_labeled_demos,
                               seed=s.seed)
        built = build_demos(program, run.trainset, teacher, s.metric, key="bootstrap",
                            params={"order": "trainset"}, max_bootstrapped_demos=s.max_bootstrapped_demos,
                            max_labeled_demos=s.max_labeled_demos, seed=s.seed, max_rounds=s.max_rounds,
                            metric_threshold=s.metric_threshold, max_errors=s.max_errors,
                            teacher_settings=s.teacher_settings, run_log=run.log)
        note = shortfall_note(built, s.max_bootstrapped_demos, len(run.trainset))
        if note:
            run.note(note)
        if built.budget_limited:
            run.note(f"the budget ran out while bootstrapping: {len(built.used)} demos bootstrapped before it")
        for name, predictor in program.named_predictors():
            if not built.demos[name] and not labeled_demos(predictor, run.trainset):
                run.note(f"predictor {name!r}: nothing passed and no training example has its fields; no demos")
            predictor.demos = built.demos[name]
        program.compile_record = OptimizerRecord(name=self.name, errors=built.errors,
                                                 budget_limited=built.budget_limited)
        if run.log is not None:
            run.log.finish(summary={"bootstrapped": len(built.used), "attempts": built.attempts,
                                    "errors": built.errors, "demos": demo_count(built.demos),
                                    "budget_limited": built.budget_limited},
                           points=[], title=f"{self.name}: {len(built.used)} bootstrapped demos")
        return program
