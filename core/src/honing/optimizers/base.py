"""The optimizer contract every plugin implements.

An optimizer is its settings and nothing else. It declares them once, as a frozen attrs class named
``Settings`` whose fields are its hyperparameters (`honing.optimizers.kit.checks.setting`); the class's
constructor *is* that settings class (same parameters, same defaults, same checks), the record's
parameters and `get_params()` are derived from it, and the optimizer object cannot change afterwards::

    class LabeledFewShot(Optimizer):
        @attrs.frozen
        class Settings:
            k: int = setting(16, check=count())
            seed: int = setting(0, kw_only=True)
            metric: Any = setting(None, check=metric_callable, kw_only=True)

        def optimize(self, program, run):
            ...            # change demos / instructions / LMs on `program`, a copy of the student
            return program

``compile(student, *, trainset, valset=None, teacher=None, run_dir=None, resume=False)`` returns a new
program and never mutates `student`. The base class validates inputs before anything is spent, copies the
student, opens the run log, tracks usage, wall time and budget refusals, and writes an `OptimizerRecord`
into the result. Per-compile state lives in a `CompileRun` (`honing.optimizers.run`), so one optimizer may
compile several times at once.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import attrs

from honing.data import Example
from honing.errors import BudgetExceeded, OptimizerError
from honing.jsontext import json_safe
from honing.lm.usage import track_usage
from honing.modules import Module, program_inputs
from honing.optimizers.kit.checks import InvalidSetting, is_recorded, is_run_neutral
from honing.optimizers.run import CompileRun
from honing.plugins.registry import optimizer_origin
from honing.record import OptimizerRecord
from honing.runs import RunLog


class Optimizer:
    """Base class of optimizers: declare `Settings` and implement `optimize(program, run)`."""

    #: The optimizer's hyperparameters: a frozen attrs class (see the module docstring).
    Settings: ClassVar[type] = attrs.make_class("Settings", {}, frozen=True)
    #: Does `compile` need a metric? (Optimizers that score candidates do.)
    requires_metric: ClassVar[bool] = False
    #: Do training examples need labels (keys besides the inputs)?
    requires_labels: ClassVar[bool] = True
    #: Keyword arguments `compile` accepts besides the standard ones; they reach `optimize` as
    #: ``run.options`` (e.g. an Optuna ``storage``). Anything else is refused before anything is spent.
    compile_options: ClassVar[frozenset[str]] = frozenset()

    settings: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("Settings")
        if declared is None:
            return
        if not (isinstance(declared, type) and attrs.has(declared)):
            raise TypeError(f"{cls.__name__}.Settings must be an attrs class (@attrs.frozen)")
        if "__init__" in cls.__dict__:
            raise TypeError(f"{cls.__name__} declares Settings and __init__: its constructor is its Settings")
        cls.__init__ = _settings_init(cls, declared)  # type: ignore[method-assign]

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # replaced in every subclass with Settings
        _settings_init(type(self), self.Settings)(self, *args, **kwargs)

    # -- settings ------------------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails: hyperparameters read as attributes (`opt.k`)
        settings = self.__dict__.get("settings")
        if settings is not None and name in attrs.fields_dict(type(settings)):
            return getattr(settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: its settings are fixed when it is made "
                             "(use .evolve(**changes)); per-compile state belongs on the CompileRun")

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if v is not None)
        return f"{type(self).__name__}({shown})"

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def metric(self) -> Callable[..., Any] | None:
        return getattr(self.settings, "metric", None)

    @property
    def seed(self) -> Any:
        return getattr(self.settings, "seed", 0)

    def evolve(self, **changes: Any) -> Optimizer:
        """A copy with some settings changed (checked like the constructor's)."""
        values = {f.name: getattr(self.settings, f.name) for f in attrs.fields(type(self.settings))}
        return type(self)(**{**values, **changes})

    def get_params(self) -> dict[str, Any]:
        """Every hyperparameter by name, the metric included."""
        return {f.name: getattr(self.settings, f.name) for f in attrs.fields(type(self.settings))}

    def record_parameters(self) -> dict[str, Any]:
        """The hyperparameters written into the record (JSON-safe; no metric, nothing unrecorded)."""
        return {f.name: json_safe(getattr(self.settings, f.name)) for f in attrs.fields(type(self.settings))
                if f.name != "metric" and is_recorded(f)}

    def run_parameters(self) -> dict[str, Any]:
        """The parameters that decide what a run computes: a resumed run must use the same ones."""
        neutral = {f.name for f in attrs.fields(type(self.settings)) if is_run_neutral(f)}
        return {k: v for k, v in self.record_parameters().items() if k not in neutral}

    # -- the template -------------------------------------------------------------------------------
    def compile(self, student: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None,
                teacher: Module | None = None, run_dir: Any = None, resume: bool = False,
                **options: Any) -> Module:
        """Return an optimized copy of `student` (which is left untouched). See `compile_run`."""
        program = self.compile_run(student, trainset=trainset, valset=valset, teacher=teacher, run_dir=run_dir,
                                   resume=resume, **options).program
        assert program is not None
        return program

    def compile_run(self, student: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None,
                    teacher: Module | None = None, run_dir: Any = None, resume: bool = False,
                    **options: Any) -> CompileRun:
        """Compile and return the finished `CompileRun` (its `program`, notes and ranked candidates).

        `run_dir`: the run's event log. It records the start, what the optimizer logs (its candidates or
        trials) and how the compile ended: "compiled" (with the errors counted and whether a Budget ran
        out, unless the optimizer closed the log with its own summary), "budget_exceeded" or
        "interrupted" (Ctrl-C; a message says how to resume). `resume=True` continues a run directory.

        Budgets: when a Budget refuses a call during the compile, the program returned is the best
        found before that and its record says ``budget_limited=True`` (also when the optimizer caught
        the refusal itself). An optimizer with nothing usable yet lets `BudgetExceeded` propagate; one
        that has something may raise it with ``best_program`` set to that program instead of returning.
        """
        unknown = sorted(set(options) - self.compile_options)
        if unknown:
            raise TypeError(f"{self.name}.compile() got unexpected keyword argument(s): {', '.join(unknown)}")
        if resume and run_dir is None:
            raise OptimizerError(f"{self.name}.compile: resume=True needs run_dir= (the run to continue)")
        self.validate(student, trainset, valset, teacher)
        run_log = (RunLog(run_dir, optimizer=self.name, parameters=self.run_parameters(), resume=resume)
                   if run_dir is not None else None)
        run = CompileRun(self.name, self.settings, student, list(trainset),
                         list(valset) if valset is not None else None, teacher, log=run_log, resume=resume,
                         options=dict(options))
        program = student.deepcopy()
        program.compile_record = None
        started = time.perf_counter()
        best_on_refusal: Module | None = None
        with track_usage() as tracker:
            try:
                compiled = self.optimize(program, run)
            except BudgetExceeded as exc:
                best_on_refusal = getattr(exc, "best_program", None)
                if not isinstance(best_on_refusal, Module):
                    if run_log is not None:
                        run_log.event("budget_exceeded", error=str(exc), calls=tracker.total.calls)
                    raise BudgetExceeded(f"{self.name}: the budget ran out before anything usable was found "
                                         f"({exc})", spent=exc.spent, limit=exc.limit) from exc
                compiled = best_on_refusal
            except KeyboardInterrupt:
                self._interrupted(run, tracker.total.calls, run_dir)
                raise
        usage = tracker.total
        partial: OptimizerRecord | None = compiled.compile_record
        budget_limited = bool(partial and partial.budget_limited) or best_on_refusal is not None
        forced = bool(tracker.refusals) and not budget_limited
        if forced:
            budget_limited = True
            run.note(f"a Budget refused {tracker.refusals} call(s) during the compile ({tracker.last_refusal}); "
                     "this is the best program found before that")
        compiled.compile_record = attrs.evolve(
            partial or OptimizerRecord(name=self.name),
            name=self.name,
            parameters=self.record_parameters(),
            seed=self.seed,
            calls=usage.calls,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost=usage.cost,
            cache_hits=usage.cache_hits,
            wall_time=round(time.perf_counter() - started, 3),
            budget_limited=budget_limited,
            errors=(partial.errors if partial else 0) + run.example_errors,
            notes=tuple([*(partial.notes if partial else ()), *run.notes]),
            **optimizer_origin(type(self)),
        )
        record = compiled.compile_record
        if run_log is not None and (forced or best_on_refusal is not None or not run_log.closed):
            run_log.event("compiled", score=record.score, errors=record.errors, budget_limited=budget_limited,
                          calls=record.calls, cache_hits=record.cache_hits, candidates=len(record.candidates),
                          per_candidate_errors={str(c.get("key", i)): c.get("errors", 0)
                                                for i, c in enumerate(record.candidates)})
        run.program = compiled
        return run

    def _interrupted(self, run: CompileRun, calls: int, run_dir: Any) -> None:
        """Ctrl-C: record it in the run log (flushed and fsync'd) and say how to carry on."""
        if run.log is not None:
            run.log.event("interrupted", calls=calls)
            sys.stderr.write(f"\n{self.name}: interrupted. Every finished step is in the run log {run_dir}; "
                             f"run the same compile again with --resume (resume=True, run_dir={str(run_dir)!r}) "
                             "to continue without paying for them again.\n")
        else:
            sys.stderr.write(f"\n{self.name}: interrupted. Nothing was saved to resume from: pass --run-dir "
                             "(run_dir=...) to make a compile resumable.\n")
        sys.stderr.flush()

    def optimize(self, program: Module, run: CompileRun) -> Module:
        """Change `program` (a copy of the student) and return it. Inputs, the run log, notes and
        compile options are on `run`."""
        raise NotImplementedError(f"{type(self).__name__} must implement optimize(program, run)")

    # -- validation ---------------------------------------------------------------------------------
    def validate(self, student: Module, trainset: Sequence[Example], valset: Sequence[Example] | None,
                 teacher: Module | None) -> None:
        if not isinstance(student, Module):
            raise OptimizerError(f"{self.name}.compile: student must be a honing Module, got {type(student).__name__}")
        if not student.predictors():
            raise OptimizerError(f"{self.name}.compile: the student has no predictors to optimize")
        check_examples(student, trainset, "trainset", labels=self.requires_labels)
        if valset is not None:
            check_examples(student, valset, "valset", labels=self.metric is not None)
        if teacher is not None:
            check_same_shape(student, teacher)


def _settings_init(cls: type[Optimizer], settings_class: type) -> Callable[..., None]:
    """The constructor of `cls`: its Settings' own (parameters, defaults and checks), then the metric rules."""

    def __init__(self: Optimizer, *args: Any, **kwargs: Any) -> None:
        try:
            settings = settings_class(*args, **kwargs)
        except InvalidSetting as exc:
            raise OptimizerError(f"{cls.__name__}: {exc}") from None
        except TypeError as exc:
            raise TypeError(f"{cls.__name__}(): {str(exc).split('() ', 1)[-1]}") from None
        metric = getattr(settings, "metric", None)
        if metric is not None and not callable(metric):
            raise OptimizerError(f"{cls.__name__}: metric must be callable (example, prediction, trace=None) "
                                 f"-> bool | float, got {type(metric).__name__}")
        if metric is None and cls.requires_metric:
            raise OptimizerError(f"{cls.__name__} needs a metric: {cls.__name__}(metric=my_metric, ...)")
        object.__setattr__(self, "settings", settings)

    # the constructor's signature is the settings class's own (self, then its fields)
    __init__.__signature__ = inspect.signature(settings_class.__init__).replace(  # type: ignore[attr-defined]
        return_annotation=None)
    __init__.__doc__ = settings_class.__doc__ or cls.__doc__
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


def check_examples(program: Module, examples: Sequence[Example], what: str, *, labels: bool) -> None:
    """Every example is an Example with inputs marked, the program's input fields, and labels if needed."""
    if examples is None or isinstance(examples, (str, bytes)) or not hasattr(examples, "__len__"):
        raise OptimizerError(f"{what} must be a list of hn.Example, got {type(examples).__name__}")
    if len(examples) == 0:
        raise OptimizerError(f"{what} is empty: give at least one hn.Example")
    needed = program_inputs(program)
    for i, example in enumerate(examples):
        if not isinstance(example, Example):
            raise OptimizerError(f"{what}[{i}] is a {type(example).__name__}, expected hn.Example(...).with_inputs(...)")
        if example.input_keys is None:
            raise OptimizerError(f"{what}[{i}] has no input keys: build it with .with_inputs({', '.join(map(repr, needed or ['field']))})")
        if needed is not None:
            missing = [n for n in needed if n not in example]
            if missing:
                raise OptimizerError(f"{what}[{i}] is missing input field(s) {', '.join(map(repr, missing))} "
                                     f"(it has: {', '.join(example) or 'nothing'})")
            unmarked = [n for n in needed if n not in example.input_keys]
            if unmarked:
                raise OptimizerError(f"{what}[{i}]: field(s) {', '.join(map(repr, unmarked))} are not marked as inputs")
        if labels and not example.labels():
            raise OptimizerError(f"{what}[{i}] has no labels (only inputs {', '.join(example.input_keys)}); "
                                 "this optimizer needs labelled examples")


def check_same_shape(student: Module, other: Module, what: str = "teacher") -> None:
    """`other` must have the student's predictors (names and fields) and share none of its objects."""
    mine = student.named_predictors()
    theirs = other.named_predictors()
    if [n for n, _ in mine] != [n for n, _ in theirs]:
        raise OptimizerError(f"{what} has predictors {[n for n, _ in theirs]}, the student has {[n for n, _ in mine]}")
    for (name, a), (_, b) in zip(mine, theirs):
        if a is b:
            raise OptimizerError(f"{what} shares predictor {name!r} with the student; pass a copy (program.deepcopy())")
        fa = [(f.name, f.role, f.type_name) for f in a.signature.fields]
        fb = [(f.name, f.role, f.type_name) for f in b.signature.fields]
        if fa != fb:
            raise OptimizerError(f"{what} predictor {name!r} has fields {fb}, the student has {fa}")


__all__ = ["CompileRun", "Optimizer", "check_examples", "check_same_shape"]
