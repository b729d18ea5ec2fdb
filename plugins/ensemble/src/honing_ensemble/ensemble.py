"""Ensemble: one program that runs several programs on the same inputs and reduces their predictions.

    run = search.compile_run(student, trainset=trainset, valset=valset)  # e.g. a RandomSearch
    programs = run.top_programs(3)                   # its three best candidates
    ensemble = Ensemble(size=None).compile(programs)  # an EnsembleProgram (a Module)
    ensemble.save("ensemble.json")                   # every member, in one file
    again = EnsembleProgram.like("ensemble.json", lambda: hn.Predict(Classify))

Members are saved under their position (``members.0``, ``members.1.predict``, ...), and the
ensemble's own settings (size, seed, deterministic, reducer name) as its extra state. Loading needs an
EnsembleProgram with as many members of the same shape: `EnsembleProgram.like(path, factory)` builds
one from the file's member count.
"""

from __future__ import annotations

import copy
import itertools
import os
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from honing.plugin_api import (
    BudgetExceeded,
    CandidateEvaluator,
    CompileRun,
    ConfigurationError,
    Example,
    InputError,
    InvalidSetting,
    LoadError,
    Module,
    Optimizer,
    OptimizerError,
    OptimizerRecord,
    Prediction,
    check_examples,
    integer,
    metric_score,
    normalize,
    program_inputs,
    read_document,
    setting,
)

Reducer = Callable[[list[Prediction]], Any]


# ----------------------------------------------------------------------------------------------------
# reducers

def majority(predictions: Sequence[Prediction]) -> Prediction:
    """Vote per output field: the value most predictions give, compared as normalised text (case,
    punctuation, articles and spacing ignored). A tie goes to the value of the earliest member, so list
    the members best first. Fields are voted independently; the winning value is returned as the first
    member that gave it wrote it."""
    predictions = [p for p in predictions if p is not None]
    if not predictions:
        raise ValueError("majority needs at least one prediction")
    fields: list[str] = []
    for prediction in predictions:
        fields.extend(k for k in prediction if not k.startswith("_") and k not in fields)
    outputs: dict[str, Any] = {}
    votes: dict[str, dict[str, int]] = {}
    for name in fields:
        counts: dict[str, int] = {}
        first: dict[str, Any] = {}
        for prediction in predictions:
            if name not in prediction:
                continue
            key = normalize(prediction[name])
            counts[key] = counts.get(key, 0) + 1
            first.setdefault(key, prediction[name])
        # max() keeps the first maximum, and `counts` is in order of first appearance (member order)
        winner = max(counts, key=counts.__getitem__)
        outputs[name] = first[winner]
        votes[name] = counts
    return Prediction.from_outputs(outputs, {"reduce": "majority", "votes": votes, "n": len(predictions)})


REDUCERS: dict[str, Reducer] = {"majority": majority}


def reducer_name(fn: Reducer | None) -> str | None:
    if fn is None:
        return None
    for name, known in REDUCERS.items():
        if fn is known:
            return name
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


# ----------------------------------------------------------------------------------------------------
# the program

class EnsembleProgram(Module):
    """Runs its `members` (all, or a seeded random subset of `size` per call) and reduces their predictions.

    `deterministic=True` uses the same subset (drawn from `seed`) on every call; False draws a fresh
    subset per call from an RNG the program owns, seeded with `seed` (a loaded program starts that
    stream afresh). The subset keeps member order, so a reducer's ties still go to the earlier member.
    A member that fails is left out of the vote (counted in ``prediction.meta["ensemble"]``); if all
    fail, the first error is raised. `reduce_fn=None` returns the list of member predictions.
    """

    def __init__(self, members: Sequence[Module], *, reduce_fn: Reducer | None = majority,
                 size: int | None = None, deterministic: bool = False, seed: int = 0) -> None:
        members = list(members)
        if not members:
            raise OptimizerError("EnsembleProgram needs at least one member program")
        for i, member in enumerate(members):
            if not isinstance(member, Module):
                raise OptimizerError(f"members[{i}] is a {type(member).__name__}, expected a honing Module")
        _check_size(size, len(members))
        self.members = members
        self.reduce_fn = reduce_fn
        self.size = size
        self.deterministic = bool(deterministic)
        self.seed = seed
        self._rng = random.Random(f"{seed}:calls")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"EnsembleProgram({len(self.members)} members, size={self.size}, "
                f"reduce_fn={reducer_name(self.reduce_fn)}, deterministic={self.deterministic}, "
                f"seed={self.seed})")

    def __deepcopy__(self, memo: dict[int, Any]) -> EnsembleProgram:
        new = object.__new__(type(self))
        memo[id(self)] = new
        for key, value in vars(self).items():
            if key == "_lock":
                new._lock = threading.Lock()
            elif key == "reduce_fn":
                new.reduce_fn = value
            else:
                setattr(new, key, copy.deepcopy(value, memo))
        return new

    @classmethod
    def like(cls, source: int | str | os.PathLike[str], member_factory: Callable[[], Module],
             **kwargs: Any) -> EnsembleProgram:
        """An ensemble of `source` fresh members (``member_factory()`` each), or, given a saved ensemble's
        path, one with that file's member count, loaded from it. `kwargs` go to the constructor (give
        ``reduce_fn=`` when the file was saved with a reducer of your own)."""
        if isinstance(source, int) and not isinstance(source, bool):
            return cls([member_factory() for _ in range(source)], **kwargs)
        doc = read_document(source)
        n = (doc.extra_state.get("self") or {}).get("n_members")
        if type(n) is not int or n < 1:
            raise LoadError("not a saved EnsembleProgram: its extra state has no member count",
                            file=str(source), path="$.extra_state.self.n_members")
        program = cls([member_factory() for _ in range(n)], **kwargs)
        return program.load(source)  # type: ignore[return-value]

    # -- running ---------------------------------------------------------------------------------------
    def input_names(self) -> list[str] | None:
        """The members' input fields (forward takes ``**inputs``; the CLI asks this to read examples)."""
        return program_inputs(self.members[0])

    def chosen(self) -> list[int]:
        """The member indices the next call runs (drawing from the program's RNG when not deterministic)."""
        n = len(self.members)
        if self.size is None or self.size >= n:
            return list(range(n))
        if self.deterministic:
            return sorted(random.Random(f"{self.seed}:subset").sample(range(n), self.size))
        with self._lock:
            return sorted(self._rng.sample(range(n), self.size))

    def forward(self, **inputs: Any) -> Any:
        indices = self.chosen()
        predictions: list[Any] = []
        errors: list[Exception] = []
        for i in indices:
            try:
                predictions.append(self.members[i](**inputs))
            except (BudgetExceeded, ConfigurationError, InputError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - one failing member does not sink the vote
                errors.append(exc)
        if not predictions:
            raise errors[0]
        if self.reduce_fn is None:
            return predictions
        result = self.reduce_fn(predictions)
        if isinstance(result, Prediction):
            result.meta["ensemble"] = {"members": indices, "failed": len(errors)}
        return result

    # -- state -----------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"n_members": len(self.members), "size": self.size, "deterministic": self.deterministic,
                "seed": self.seed, "reduce_fn": reducer_name(self.reduce_fn)}

    def load_extra_state(self, state: dict[str, Any], *, base_path: str | None = None) -> None:
        where = "$.extra_state.self"
        n = state.get("n_members")
        if n != len(self.members):
            raise LoadError(f"the file holds an ensemble of {n} members, this EnsembleProgram has "
                            f"{len(self.members)}; build it with EnsembleProgram.like(path, member_factory)",
                            path=f"{where}.n_members")
        size, seed, deterministic = state.get("size"), state.get("seed"), state.get("deterministic")
        if size is not None and (type(size) is not int or not 1 <= size <= len(self.members)):
            raise LoadError(f"size must be null or an integer in 1..{len(self.members)}, got {size!r}",
                            path=f"{where}.size")
        if type(deterministic) is not bool:
            raise LoadError(f"deterministic must be a boolean, got {deterministic!r}",
                            path=f"{where}.deterministic")
        if type(seed) is not int:
            raise LoadError(f"seed must be an integer, got {seed!r}", path=f"{where}.seed")
        saved = state.get("reduce_fn")
        if saved is None:
            reduce_fn: Reducer | None = None
        elif saved in REDUCERS:
            reduce_fn = REDUCERS[saved]
        elif saved == reducer_name(self.reduce_fn):
            reduce_fn = self.reduce_fn
        else:
            raise LoadError(f"saved with reduce_fn {saved!r}, this program has "
                            f"{reducer_name(self.reduce_fn)!r}: build it with "
                            "EnsembleProgram.like(path, member_factory, reduce_fn=<that function>)",
                            path=f"{where}.reduce_fn")
        unknown = sorted(set(state) - {"n_members", "size", "deterministic", "seed", "reduce_fn"})
        if unknown:
            raise LoadError(f"unknown ensemble setting(s) {', '.join(unknown)}", path=where)
        self.size, self.seed, self.deterministic, self.reduce_fn = size, seed, deterministic, reduce_fn
        self._rng = random.Random(f"{seed}:calls")


def _check_size(size: Any, n: int | None = None) -> None:
    problem = _size_problem(size, n)
    if problem:
        raise OptimizerError(f"Ensemble: {problem}")


def _size_problem(size: Any, n: int | None = None) -> str | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        return f"size must be a positive integer or None (all members), got {size!r}"
    if n is not None and size > n:
        return f"size={size} but there are only {n} programs"
    return None


# ----------------------------------------------------------------------------------------------------
# the optimizer

def _size(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    problem = _size_problem(value)
    if problem:
        raise InvalidSetting(problem)


def _reducer(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise InvalidSetting(f"{attribute.name} must be callable (list of predictions -> prediction) or "
                             f"None, got {type(value).__name__}")


class Ensemble(Optimizer):
    """Combine several programs into one that runs them all (or a seeded subset) and votes."""

    requires_metric = False
    requires_labels = False

    @attrs.frozen
    class Settings:
        """
        :param reduce_fn: turns the members' predictions into one (default: `majority`, a vote per
            output field); None returns the list. Recorded by its name.
        :param size: members run per call (a seeded random subset); None runs all of them.
        :param deterministic: with `size`, use the same subset on every call.
        :param seed: seeds the subset draws.
        :param metric: optional; with a valset, compile scores every member and the ensemble and records
            them (the record's `score` is the ensemble's).
        :param num_threads: threads scoring each member on the valset (default: the configured number).
        :param select: with a metric and a valset (and `size` None), keep the combination of members whose
            vote scores best on the valset, ties going to fewer members (each costs a call per
            prediction). The combinations are scored from the members' recorded predictions, so choosing
            costs no LM call, and since every member alone is a combination, the ensemble never scores
            below its best member on the valset (a vote can: two candidates that share a mistake outvote
            the one that gets it right). False keeps every member.
        """

        reduce_fn: Reducer | None = setting(majority, check=_reducer)
        size: int | None = setting(None, check=_size, kw_only=True)
        deterministic: bool = setting(False, converter=bool, kw_only=True)
        seed: int = setting(0, check=integer, kw_only=True)
        metric: Any = setting(None, kw_only=True, recorded=False)
        num_threads: int | None = setting(None, kw_only=True, recorded=False)
        select: bool = setting(True, converter=bool, kw_only=True)

    def record_parameters(self) -> dict[str, Any]:
        """The settings, with the reducer recorded by its name."""
        return {**super().record_parameters(), "reduce_fn": reducer_name(self.settings.reduce_fn)}

    def compile(self, programs: Sequence[Module] | EnsembleProgram, *,  # type: ignore[override]
                trainset: Sequence[Example] | None = None, valset: Sequence[Example] | None = None,
                teacher: Module | None = None, **kwargs: Any) -> Module:
        """One `EnsembleProgram` of copies of `programs` (a list of programs, or an EnsembleProgram whose
        members to re-ensemble). `trainset` is optional and only checked; with a metric, `valset` is
        used to score the members and the ensemble. The programs are left untouched."""
        return super().compile(programs, trainset=trainset,  # type: ignore[arg-type]
                               valset=valset, teacher=teacher, **kwargs)

    def compile_run(self, programs: Sequence[Module] | EnsembleProgram, *,  # type: ignore[override]
                    trainset: Sequence[Example] | None = None, valset: Sequence[Example] | None = None,
                    teacher: Module | None = None, **kwargs: Any) -> CompileRun:
        members = self._members(programs)
        if teacher is not None:
            raise OptimizerError("Ensemble.compile takes no teacher")
        s = self.settings
        _check_size(s.size, len(members))
        if trainset is not None:
            check_examples(members[0], trainset, "trainset", labels=False)
        student = EnsembleProgram([m.deepcopy() for m in members], reduce_fn=s.reduce_fn, size=s.size,
                                  deterministic=s.deterministic, seed=s.seed)
        return super().compile_run(student, trainset=trainset if trainset is not None else [], valset=valset,
                                   teacher=None, **kwargs)

    def _members(self, programs: Any) -> list[Module]:
        if isinstance(programs, EnsembleProgram):
            return list(programs.members)
        if isinstance(programs, Module):
            raise OptimizerError(f"Ensemble.compile takes a list of programs ([p1, p2, ...]), got one "
                                 f"{type(programs).__name__}")
        if programs is None or isinstance(programs, (str, bytes)) or not hasattr(programs, "__iter__"):
            raise OptimizerError(f"Ensemble.compile takes a list of programs, got {type(programs).__name__}")
        members = list(programs)
        if not members:
            raise OptimizerError("Ensemble.compile: the list of programs is empty")
        for i, member in enumerate(members):
            if not isinstance(member, Module):
                raise OptimizerError(f"Ensemble.compile: programs[{i}] is a {type(member).__name__}, "
                                     "expected a honing Module")
            if not member.predictors():
                raise OptimizerError(f"Ensemble.compile: programs[{i}] has no predictors")
        inputs = [program_inputs(m) for m in members]
        known = [(i, sorted(x)) for i, x in enumerate(inputs) if x is not None]
        for i, names in known[1:]:
            if names != known[0][1]:
                raise OptimizerError(f"Ensemble.compile: programs[{i}] takes inputs {names}, "
                                     f"programs[{known[0][0]}] takes {known[0][1]}; members must take the "
                                     "same inputs")
        return members

    def validate(self, student: Module, trainset: Sequence[Example], valset: Sequence[Example] | None,
                 teacher: Module | None) -> None:
        # the programs and the trainset were checked by compile_run, before the members were copied
        if valset is not None:
            check_examples(student.members[0], valset, "valset",  # type: ignore[attr-defined]
                           labels=self.metric is not None)

    def optimize(self, program: Module, run: CompileRun) -> Module:
        if self.metric is None or run.valset is None:
            if run.log is not None:
                run.note("run_dir ignored: nothing is scored without a metric and a valset")
            program.compile_record = OptimizerRecord(name=self.name)
            return program
        return self._score(program, run)  # type: ignore[arg-type]

    def _score(self, program: EnsembleProgram, run: CompileRun) -> Module:
        """Score each member, choose the members to keep, then score the ensemble (whose calls the LM
        cache serves by then: they are its members' calls)."""
        s = self.settings
        valset = run.valset
        assert valset is not None and s.metric is not None
        selecting = s.select and s.size is None and s.reduce_fn is not None and len(program.members) > 1
        evaluator = CandidateEvaluator(valset, s.metric, num_threads=s.num_threads, run_log=run.log,
                                       event="candidate", keep_predictions=selecting)
        results = []
        try:
            for i, member in enumerate(program.members):
                result = evaluator.evaluate(f"member_{i}", member, {"member": i})
                if selecting and result.from_log:  # a resumed run logged the score, not the predictions
                    rescorer = CandidateEvaluator(valset, s.metric, num_threads=s.num_threads,
                                                  keep_predictions=True)
                    result = rescorer.evaluate(f"member_{i}", member, {"member": i})
                results.append(result)
            kept = list(range(len(results)))
            if selecting:
                kept = self._select(run, results, valset)
                program.members = [program.members[i] for i in kept]
            whole = evaluator.evaluate("ensemble", program, {"ensemble": True, "members": kept})
        except BudgetExceeded:
            # the ensemble itself is complete; only its scoring was cut short
            run.note(f"the budget ran out while scoring ({len(results)} of {len(program.members)} members "
                     "scored); the ensemble is returned unscored")
            program.compile_record = OptimizerRecord(
                name=self.name, scores={r.key: round(r.score, 6) for r in results},
                candidates=tuple(r.summary() for r in results), budget_limited=True)
            return program
        best = max(results, key=lambda r: r.score)
        if whole.score < best.score:
            run.note(f"the ensemble scores {whole.score:.3f}, below its best member "
                     f"({best.key}: {best.score:.3f})")
        program.compile_record = OptimizerRecord(
            name=self.name, score=whole.score, scores={r.key: round(r.score, 6) for r in [*results, whole]},
            candidates=tuple(r.summary() for r in [*results, whole]),
            errors=sum(r.n_errors for r in [*results, whole]))
        if run.log is not None:
            run.log.finish(summary={"score": whole.score, "best_member": best.key,
                                    "best_member_score": best.score, "members_kept": kept},
                           points=[(r.key, r.score) for r in [*results, whole]],
                           title=f"Ensemble of {len(program.members)}: {whole.score:.3f}")
        return program

    def _select(self, run: CompileRun, results: list[Any], valset: list[Example]) -> list[int]:
        """The member indices (in member order) whose vote scores best on the valset; ties go to fewer
        members (each is one more LM call per prediction), then to the earlier combination. Tries every
        combination up to `EXHAUSTIVE_UP_TO` members; above that, each step of a greedy forward
        selection that starts from the best member and adds the most helpful one until all are in."""
        n = len(results)
        reduce_fn, metric = self.settings.reduce_fn, self.settings.metric

        def score(subset: tuple[int, ...]) -> float:
            return _vote_score(reduce_fn, metric, valset, [results[i].predictions for i in subset])

        if n <= EXHAUSTIVE_UP_TO:
            subsets = [c for size in range(1, n + 1) for c in itertools.combinations(range(n), size)]
            scored = [(score(c), -len(c), -rank, c) for rank, c in enumerate(subsets)]
            best_score, _, _, chosen = max(scored)
        else:  # add the member that helps most, all the way to every member; keep the best step
            step: tuple[int, ...] = (max(range(n), key=lambda i: (results[i].score, -i)),)
            path = [(score(step), step)]
            while len(step) < n:
                options = [tuple(sorted((*step, i))) for i in range(n) if i not in step]
                top_score, _, step = max((score(c), -rank, c) for rank, c in enumerate(options))
                path.append((top_score, step))
            best_score, _, chosen = max((s, -len(c), c) for s, c in path)
        every = score(tuple(range(n)))
        if len(chosen) < n:
            run.note(f"kept members {', '.join(map(str, chosen))} of {n}: their vote scores {best_score:.3f} "
                     f"on the valset, all {n} together {every:.3f}, the best member alone "
                     f"{max(r.score for r in results):.3f} (select=False keeps every member)")
        return list(chosen)


#: up to this many members, `Ensemble(select=True)` scores every combination (2**n - 1 of them)
EXHAUSTIVE_UP_TO = 10


def _vote_score(reduce_fn: Reducer, metric: Callable[..., Any], valset: list[Example],
                member_predictions: list[Sequence[Any]]) -> float:
    """The valset score of the reduced vote of some members' recorded predictions (None = that member
    failed on the example; an example no member answered, or whose reduction or metric fails, scores 0)."""
    total = 0.0
    for j, example in enumerate(valset):
        votes = [predictions[j] for predictions in member_predictions if predictions[j] is not None]
        if not votes:
            continue
        try:
            total += metric_score(metric, example, reduce_fn(votes))
        except Exception:  # noqa: BLE001 - scored as a failure, as Evaluate would
            continue
    return total / len(valset) if valset else 0.0
