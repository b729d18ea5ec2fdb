"""BootstrapFewShot: run a teacher over the trainset, keep the runs that pass the metric as demos, and
top the demos up with labelled examples.

The pieces the searches of this package share live here too: parameter checks, the run log, and
`build_demos`, which makes one candidate's demos (one bootstrap pass in a given order, then the
labelled fill) and logs it, so a resumed run takes a finished bootstrap from the log.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import honing
from honing import settings
from honing.data import Example
from honing.errors import BudgetExceeded, OptimizerError
from honing.lm.types import Usage
from honing.lm.usage import track_usage
from honing.modules import Module
from honing.optimizers.demos import Bootstrap, assemble, bootstrap_demos, labeled_demos, make_teacher
from honing.optimizers.record import OptimizerRecord
from honing.runs import RunLog

Demos = dict[str, list[dict[str, Any]]]

#: Demos per predictor (bootstrapped + labelled) in every candidate of the searches (random search,
#: Optuna). BootstrapFewShot keeps DSPy's 16 (the issue's signature); the searches, which score their
#: candidates on a valset, default to more because for a small model the number of demos in the prompt
#: is what matters most. Measured with SmolLM2-135M (calibrated choice scoring, the local model's default
#: decoding) on two 10-intent Banking77 subsets (`bench.common.banking77_subset` seeds 0 and 1, 60
#: training examples), as dev accuracy (80 examples; 100 for 8 demos) of a random sample of labelled demos:
#:
#:     demos per predictor      8      16      32      48
#:     subset seed 0          0.55   0.675   0.775   0.775
#:     subset seed 1            -    0.562   0.800   0.800
#:
#: 32 is where the gain stops (48 adds nothing and a third more prompt tokens per call); all 60 examples
#: inline reached 0.745 on subset 0 (200 dev). With fewer training examples every usable one is used.
SEARCH_MAX_LABELED_DEMOS = 32

#: Parameters that change how a run is shown or scheduled, not what it computes: a resumed run may
#: change them (the run log compares every other parameter with the first session's).
RUN_NEUTRAL = frozenset({"num_threads", "display_progress"})


# ----------------------------------------------------------------------------------------------------
# parameter checks (each names the optimizer and the parameter)

def check_count(owner: str, name: str, value: Any, *, minimum: int = 0, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptimizerError(f"{owner}: {name} must be an integer >= {minimum}"
                             f"{' or None' if optional else ''}, got {value!r}")
    return value


def check_fraction(owner: str, name: str, value: Any) -> float | None:
    """None, or a number in [0, 1]. Scores are fractions everywhere in honing, never percentages."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        hint = f" (did you mean {value / 100:g}?)" if isinstance(value, numbers.Real) and 1 < value <= 100 else ""
        raise OptimizerError(f"{owner}: {name} is a score fraction in [0, 1], got {value!r}{hint}")
    return float(value)


def check_threshold(owner: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptimizerError(f"{owner}: metric_threshold must be a number or None, got {value!r}")
    return float(value)


def check_teacher_settings(owner: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise OptimizerError(f"{owner}: teacher_settings must be a dict of settings, e.g. "
                             f"{{'lm': hn.LM('openai/gpt-4o-mini')}}, got {type(value).__name__}")
    unknown = sorted(set(value) - set(settings.SETTING_NAMES))
    if unknown:
        raise OptimizerError(f"{owner}: unknown teacher_settings {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(settings.SETTING_NAMES)}")
    return dict(value)


def effective_max_errors(max_errors: int | None) -> int | None:
    """The optimizer's `max_errors`, else the configured default (`hn.configure(max_errors=...)`)."""
    return max_errors if max_errors is not None else settings.current().max_errors


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def open_run_log(optimizer: honing.Optimizer, run_dir: Any, resume: bool) -> RunLog | None:
    """The run's event log in `run_dir` (None without one); a resume must use the same parameters."""
    if run_dir is None:
        if resume:
            raise OptimizerError(f"{optimizer.name}.compile: resume=True needs run_dir= (the run to continue)")
        return None
    parameters = {k: v for k, v in optimizer.record_parameters().items() if k not in RUN_NEUTRAL}
    return RunLog(run_dir, optimizer=optimizer.name, parameters=parameters, resume=resume)


def reject_unknown(owner: str, kwargs: Mapping[str, Any]) -> None:
    if kwargs:
        raise TypeError(f"{owner}.compile() got unexpected keyword argument(s): {', '.join(sorted(kwargs))}")


def demo_count(state: Mapping[str, Any]) -> int:
    """Demos over all predictors of a `program_state` (or of a {name: demos} dict)."""
    total = 0
    for value in state.values():
        total += len(value.get("demos", [])) if isinstance(value, Mapping) else len(value)
    return total


# ----------------------------------------------------------------------------------------------------
# one candidate's demos

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
                *, key: str, params: dict[str, Any], max_bootstrapped_demos: int, max_labeled_demos: int,
                seed: Any, order: Sequence[int] | None = None, max_rounds: int = 1,
                metric_threshold: float | None = None, max_errors: int | None = None,
                teacher_settings: Mapping[str, Any] | None = None, run_log: RunLog | None = None) -> BuiltDemos:
    """One bootstrap pass over `trainset` (in `order`) and the labelled fill, logged as a "bootstrap"
    event under `key`; a resumed run with the same `params` takes it from the log instead.

    A BudgetExceeded during the pass returns what was bootstrapped before it (`budget_limited=True`) when
    at least one run passed; otherwise it propagates.
    """
    if run_log is not None:
        logged = run_log.finished("bootstrap").get(key)
        if logged is not None and logged.get("params") == jsonable(params):
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
        run_log.event("bootstrap", key=key, params=jsonable(params), demos=jsonable(demos), used=list(boot.used),
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


# ----------------------------------------------------------------------------------------------------
# the optimizer

class BootstrapFewShot(honing.Optimizer):
    """Demos from a teacher's runs that pass the metric, topped up with labelled examples."""

    requires_metric = False
    requires_labels = True

    def __init__(self, metric: Callable[..., Any] | None = None, *, metric_threshold: float | None = None,
                 max_bootstrapped_demos: int = 4, max_labeled_demos: int = 16,
                 max_rounds: int = 1, max_errors: int | None = None,
                 teacher_settings: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        """
        :param metric: ``metric(example, prediction, trace) -> bool | float``; a teacher run becomes demos
            when it passes. None accepts every run that does not fail.
        :param metric_threshold: a run passes when the metric reaches this value (0 is a real threshold);
            None: when the metric's value is truthy.
        :param max_bootstrapped_demos: bootstrapped demos per predictor (the pass stops once this many
            training examples have passed).
        :param max_labeled_demos: demos per predictor in all; the slots bootstrapping leaves free hold
            labelled training examples that were not bootstrapped. The default teacher (the student) also
            gets this many labelled demos. Small models want more (the searches default to
            `SEARCH_MAX_LABELED_DEMOS` = 32, measured there).
        :param max_rounds: attempts per training example; later rounds ask for a fresh sample.
        :param max_errors: failed teacher runs tolerated; the next one raises TooManyErrors.
            None: ``hn.configure(max_errors=...)``, else no limit.
        :param teacher_settings: settings for the teacher runs, e.g. ``{"lm": hn.LM("openai/gpt-4o")}``.
        :param seed: seeds every labelled sample.
        """
        owner = type(self).__name__
        check_count(owner, "max_bootstrapped_demos", max_bootstrapped_demos)
        check_count(owner, "max_labeled_demos", max_labeled_demos)
        check_count(owner, "max_rounds", max_rounds, minimum=1)
        check_count(owner, "max_errors", max_errors, optional=True)
        metric_threshold = check_threshold(owner, metric_threshold)
        teacher_settings = check_teacher_settings(owner, teacher_settings)
        super().__init__(metric, metric_threshold=metric_threshold, max_bootstrapped_demos=max_bootstrapped_demos,
                         max_labeled_demos=max_labeled_demos, max_rounds=max_rounds, max_errors=max_errors,
                         teacher_settings=teacher_settings, seed=seed)
        self.metric_threshold = metric_threshold
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.max_rounds = max_rounds
        self.max_errors = max_errors
        self.teacher_settings = teacher_settings

    def optimize(self, program: Module, *, trainset: list[Example], valset: list[Example] | None,
                 teacher: Module | None, run_dir: Any = None, resume: bool = False, **kwargs: Any) -> Module:
        reject_unknown(self.name, kwargs)
        run_log = open_run_log(self, run_dir, resume)
        teacher_program = make_teacher(program, trainset, teacher, max_labeled_demos=self.max_labeled_demos,
                                       seed=self.seed)
        built = build_demos(program, trainset, teacher_program, self.metric, key="bootstrap",
                            params={"order": "trainset"}, max_bootstrapped_demos=self.max_bootstrapped_demos,
                            max_labeled_demos=self.max_labeled_demos, seed=self.seed,
                            max_rounds=self.max_rounds, metric_threshold=self.metric_threshold,
                            max_errors=self.max_errors, teacher_settings=self.teacher_settings, run_log=run_log)
        note = shortfall_note(built, self.max_bootstrapped_demos, len(trainset))
        if note:
            self.note(note)
        if built.budget_limited:
            self.note(f"the budget ran out while bootstrapping: {len(built.used)} demos bootstrapped before it")
        for name, predictor in program.named_predictors():
            if not built.demos[name] and not labeled_demos(predictor, trainset):
                self.note(f"predictor {name!r}: nothing passed and no training example has its fields; no demos")
            predictor.demos = built.demos[name]
        program.compile_record = OptimizerRecord(name=self.name, errors=built.errors,
                                                 budget_limited=built.budget_limited)
        if run_log is not None:
            run_log.finish(summary={"bootstrapped": len(built.used), "attempts": built.attempts,
                                    "errors": built.errors, "demos": demo_count(built.demos),
                                    "budget_limited": built.budget_limited},
                           points=[], title=f"{self.name}: {len(built.used)} bootstrapped demos")
        return program
