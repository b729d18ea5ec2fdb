"""The optimizer contract every plugin implements.

``Optimizer(metric=None, **hyperparameters)``; ``compile(student, *, trainset, valset=None, teacher=None)``
returns a new program and never mutates `student`. The base class validates inputs before anything is
spent (empty trainset, examples missing the program's input fields, a metric that is not callable),
copies the student, tracks usage and wall time, and writes an `OptimizerRecord` into the result.
Subclasses implement `optimize(program, trainset=..., valset=..., teacher=...)` on that copy.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import attrs

from honing.data import Example
from honing.errors import BudgetExceeded, OptimizerError
from honing.lm.usage import track_usage
from honing.modules import Module, program_inputs
from honing.optimizers.record import OptimizerRecord


class Optimizer:
    """Base class of optimizers. Subclasses define `optimize` and call `super().__init__` with every
    hyperparameter by keyword, so the record (and `get_params`) lists them all."""

    #: Does `compile` need a metric? (Optimizers that score candidates do.)
    requires_metric: ClassVar[bool] = False
    #: Do training examples need labels (keys besides the inputs)?
    requires_labels: ClassVar[bool] = True

    def __init__(self, metric: Callable[..., Any] | None = None, **hyperparameters: Any) -> None:
        if metric is not None and not callable(metric):
            raise OptimizerError(f"{type(self).__name__}: metric must be callable (example, prediction, trace=None) "
                                 f"-> bool | float, got {type(metric).__name__}")
        if metric is None and self.requires_metric:
            raise OptimizerError(f"{type(self).__name__} needs a metric: {type(self).__name__}(metric=my_metric, ...)")
        self.metric = metric
        self.hyperparameters = dict(hyperparameters)
        self.seed = hyperparameters.get("seed", 0)
        self.notes: list[str] = []
        #: failed examples an optimizer counted without writing them into its own record (see `compile`)
        self.example_errors = 0

    @property
    def name(self) -> str:
        return type(self).__name__

    def get_params(self) -> dict[str, Any]:
        return {"metric": self.metric, **self.hyperparameters}

    # -- the template -------------------------------------------------------------------------------
    def compile(self, student: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None,
                teacher: Module | None = None, **kwargs: Any) -> Module:
        """Return an optimized copy of `student` (which is left untouched).

        `run_dir=` (every optimizer takes it): the run's event log. Optimizers that log their candidates
        or trials receive it; for the others the base class keeps the log (start and outcome). Either
        way the last event says how the compile ended: "compiled" (with the errors counted and whether
        a Budget ran out) or "interrupted" (Ctrl-C; a message says how to resume).

        Budgets: when a Budget refuses a call during the compile, the program returned is the best
        found before that and its record says ``budget_limited=True`` (also when the optimizer caught
        the refusal itself). An optimizer with nothing usable yet lets `BudgetExceeded` propagate; one
        that has something may raise it with ``best_program`` set to that program instead of returning.
        """
        self.validate(student, trainset, valset, teacher)
        run_dir, resume = kwargs.get("run_dir"), bool(kwargs.get("resume", False))
        if run_dir is not None and not _takes(self.optimize, "run_dir"):
            kwargs = {k: v for k, v in kwargs.items() if k not in ("run_dir", "resume")}
            self._own_run_log(run_dir, resume)
        program = student.deepcopy()
        program.compile_record = None
        self.notes = []
        self.example_errors = 0
        started = time.perf_counter()
        best_on_refusal: Module | None = None
        with track_usage() as tracker:
            try:
                compiled = self.optimize(program, trainset=list(trainset),
                                         valset=list(valset) if valset is not None else None,
                                         teacher=teacher, **kwargs)
            except BudgetExceeded as exc:
                best_on_refusal = getattr(exc, "best_program", None)
                if not isinstance(best_on_refusal, Module):
                    self._log(run_dir, "budget_exceeded", error=str(exc), calls=tracker.total.calls)
                    raise BudgetExceeded(f"{self.name}: the budget ran out before anything usable was found "
                                         f"({exc})", spent=exc.spent, limit=exc.limit) from exc
                compiled = best_on_refusal
            except KeyboardInterrupt:
                self._interrupted(run_dir, tracker.total.calls)
                raise
        usage = tracker.total
        partial: OptimizerRecord | None = compiled.compile_record
        budget_limited = bool(partial and partial.budget_limited) or best_on_refusal is not None
        forced = bool(tracker.refusals) and not budget_limited
        if forced:
            budget_limited = True
            self.note(f"a Budget refused {tracker.refusals} call(s) during the compile ({tracker.last_refusal}); "
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
            errors=(partial.errors if partial else 0) + self.example_errors,
            notes=tuple([*(partial.notes if partial else ()), *self.notes]),
            **self._distribution(),
        )
        record = compiled.compile_record
        if run_dir is not None and (forced or best_on_refusal is not None or not _ends_with_finish(run_dir)):
            self._log(run_dir, "compiled", score=record.score, errors=record.errors, budget_limited=budget_limited,
                      calls=record.calls, cache_hits=record.cache_hits, candidates=len(record.candidates),
                      per_candidate_errors={str(c.get("key", i)): c.get("errors", 0)
                                            for i, c in enumerate(record.candidates)})
        return compiled

    def _own_run_log(self, run_dir: Any, resume: bool) -> None:
        """The run log of an optimizer that does not keep one itself: refuse to reuse a run directory
        without `resume` (like `RunLog`), then record the start."""
        from honing.runs import RunLog

        RunLog(run_dir, optimizer=self.name, parameters=self.record_parameters(), resume=resume)

    def _log(self, run_dir: Any, kind: str, **fields: Any) -> None:
        if run_dir is None:
            return
        from honing.runs import append_event

        append_event(run_dir, kind, optimizer=self.name, parameters=self.record_parameters(), **fields)

    def _interrupted(self, run_dir: Any, calls: int) -> None:
        """Ctrl-C: record it in the run log (flushed and fsync'd) and say how to carry on."""
        self._log(run_dir, "interrupted", calls=calls)
        if run_dir is not None:
            sys.stderr.write(f"\n{self.name}: interrupted. Every finished step is in the run log {run_dir}; "
                             f"run the same compile again with --resume (resume=True, run_dir={str(run_dir)!r}) "
                             "to continue without paying for them again.\n")
        else:
            sys.stderr.write(f"\n{self.name}: interrupted. Nothing was saved to resume from: pass --run-dir "
                             "(run_dir=...) to make a compile resumable.\n")
        sys.stderr.flush()

    def optimize(self, program: Module, *, trainset: list[Example], valset: list[Example] | None,
                 teacher: Module | None, **kwargs: Any) -> Module:
        raise NotImplementedError(f"{type(self).__name__} must implement optimize()")

    def note(self, message: str) -> None:
        """Record something the user should know (shown in the record and logged)."""
        import logging

        logging.getLogger("honing.optimizers").info("%s: %s", self.name, message)
        self.notes.append(message)

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

    def record_parameters(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in self.hyperparameters.items()}

    def _distribution(self) -> dict[str, Any]:
        try:
            from honing.plugins.registry import optimizer_registry

            entry = optimizer_registry().get(self.name)
            return {"distribution": entry.distribution, "version": entry.version}
        except Exception:  # noqa: BLE001 - an unregistered optimizer (e.g. in a test) still compiles
            return {}


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
            raise OptimizerError(f"{what} predictor {name!r} has fields {fb}, the student's has {fa}")


def _ends_with_finish(run_dir: Any) -> bool:
    """Did the optimizer close its own run log with a "finish" event (its summary)?"""
    from pathlib import Path

    from honing.runs import EVENTS, read_events

    path = Path(run_dir) / EVENTS
    events = read_events(path) if path.exists() else []
    return bool(events) and events[-1].get("event") == "finish"


def _takes(function: Any, name: str) -> bool:
    """Does `function` name the parameter `name` (a bare ``**kwargs`` does not count)?"""
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return True


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        if isinstance(value, dict):
            return {str(k): _jsonable(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_jsonable(v) for v in value]
        if hasattr(value, "to_state"):
            return value.to_state()
        return getattr(value, "__qualname__", None) or repr(value)
