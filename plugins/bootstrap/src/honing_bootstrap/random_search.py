"""BootstrapFewShotWithRandomSearch: build many few-shot candidates, score each on the valset, keep the best.

Candidates, in order: ``zero_shot`` (no demos), ``labeled`` (labelled demos only), ``bootstrap`` (a
BootstrapFewShot pass over the trainset in its own order), then ``shuffle_0`` … ``shuffle_{N-1}``: a
bootstrap pass over a seeded shuffle of the trainset with a random number of bootstrapped demos (1 …
`max_bootstrapped_demos`) and its own labelled sample. The shuffle and the size come from independent
RNG streams, both derived from (seed, candidate index), so candidate i is the same whatever N is.

Each candidate is built and then scored on the valset, one after another, examples in a fixed order
(`honing.optimizers.search.CandidateEvaluator`), so the embedded model reuses the candidate's demo
prefix across examples; a hosted LM runs `num_threads` examples at a time.

The defaults suit small models: every candidate carries `max_labeled_demos` demos in all (32 by
default, not DSPy's 16), because for a small model the number of demos in the prompt is what matters
most; see `honing_bootstrap.fewshot.SEARCH_MAX_LABELED_DEMOS` for the measurement.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import honing
from honing.data import Example
from honing.errors import BudgetExceeded, OptimizerError, TooManyErrors
from honing.lm.types import Usage
from honing.lm.usage import track_usage
from honing.modules import Module
from honing.optimizers.demos import labeled_demos, make_teacher, sample_labeled
from honing.optimizers.record import OptimizerRecord
from honing.optimizers.search import (
    CandidateEvaluator,
    CandidateResult,
    SearchState,
    apply_state,
    progress,
)
from honing.runs import RunLog

from honing_bootstrap.fewshot import (
    SEARCH_MAX_LABELED_DEMOS,
    BuiltDemos,
    build_demos,
    check_count,
    check_fraction,
    check_teacher_settings,
    check_threshold,
    demo_count,
    open_run_log,
    reject_unknown,
    shortfall_note,
)


@attrs.frozen
class CandidateSpec:
    """How to build one candidate: its key, kind and the settings that make it (logged as its params)."""

    key: str
    kind: str  # "zero_shot" | "labeled" | "bootstrap" | "shuffle"
    index: int | None = None
    max_bootstrapped_demos: int = 0
    labeled_seed: str = ""

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"kind": self.kind}
        if self.index is not None:
            params["index"] = self.index
        if self.kind in ("bootstrap", "shuffle"):
            params["max_bootstrapped_demos"] = self.max_bootstrapped_demos
        return params


def candidate_specs(num_candidate_programs: int, max_bootstrapped_demos: int, seed: Any, *,
                    zero_shot: bool = True) -> list[CandidateSpec]:
    """zero_shot, labeled, bootstrap, then `num_candidate_programs` shuffled bootstraps of random size.

    The size of shuffle i comes from ``Random("{seed}:{i}:size")`` and its order from
    ``Random("{seed}:{i}:order")``: independent streams (DSPy seeds both with the same value).
    """
    specs = [CandidateSpec("zero_shot", "zero_shot")] if zero_shot else []
    specs.append(CandidateSpec("labeled", "labeled", labeled_seed=f"{seed}"))
    specs.append(CandidateSpec("bootstrap", "bootstrap", max_bootstrapped_demos=max_bootstrapped_demos,
                               labeled_seed=f"{seed}"))
    for i in range(num_candidate_programs):
        size = random.Random(f"{seed}:{i}:size").randint(1, max_bootstrapped_demos) if max_bootstrapped_demos else 0
        specs.append(CandidateSpec(f"shuffle_{i}", "shuffle", index=i, max_bootstrapped_demos=size,
                                   labeled_seed=f"{seed}:{i}"))
    return specs


def shuffled_order(n: int, seed: Any, index: int) -> list[int]:
    order = list(range(n))
    random.Random(f"{seed}:{index}:order").shuffle(order)
    return order


class CandidateBuilder:
    """Builds candidates' demos for one compile (shared by random search and the Optuna search).

    Every candidate bootstraps from one teacher (BootstrapFewShot's, seeded with the optimizer's seed):
    a training example's teacher run is then the same prompt in every candidate, so the LM cache pays
    for it once however many shuffles visit it. Candidates differ in the order they visit the trainset,
    how many demos they bootstrap and their labelled fill.
    """

    def __init__(self, optimizer: honing.Optimizer, program: Module, trainset: list[Example],
                 teacher: Module | None, run_log: RunLog | None) -> None:
        self.optimizer = optimizer
        self.program = program
        self.trainset = trainset
        self.teacher = teacher
        self.run_log = run_log
        self.notes: list[str] = []
        self._teacher_program: Module | None = None

    def teacher_program(self) -> Module:
        if self._teacher_program is None:
            opt: Any = self.optimizer
            self._teacher_program = make_teacher(self.program, self.trainset, self.teacher,
                                                 max_labeled_demos=opt.max_labeled_demos, seed=opt.seed)
        return self._teacher_program

    def build(self, spec: CandidateSpec) -> BuiltDemos:
        opt: Any = self.optimizer
        if spec.kind == "zero_shot":
            return BuiltDemos({name: [] for name, _ in self.program.named_predictors()})
        if spec.kind == "labeled":
            return BuiltDemos(sample_labeled(self.program, self.trainset, opt.max_labeled_demos,
                                             seed=spec.labeled_seed))
        order = shuffled_order(len(self.trainset), opt.seed, spec.index) if spec.kind == "shuffle" else None
        built = build_demos(self.program, self.trainset, self.teacher_program(), opt.metric, key=spec.key, params=spec.params,
                            max_bootstrapped_demos=spec.max_bootstrapped_demos,
                            max_labeled_demos=opt.max_labeled_demos, seed=spec.labeled_seed, order=order,
                            max_rounds=opt.max_rounds, metric_threshold=opt.metric_threshold,
                            max_errors=opt.max_errors, teacher_settings=opt.teacher_settings, run_log=self.run_log)
        note = shortfall_note(built, spec.max_bootstrapped_demos, len(self.trainset), f"{spec.key}: ")
        # one note for the first shortfall is enough: every candidate visits the same examples
        if note and not any("bootstrapped" in n for n in self.notes):
            self.notes.append(note)
        return built


def selection_set(optimizer: honing.Optimizer, trainset: list[Example], valset: list[Example] | None) -> list[Example]:
    """The valset; without one the trainset, with a note that the selection is then optimistic."""
    if valset is not None:
        return valset
    optimizer.note("no valset: candidates are scored on the trainset, which holds their own demos, so the "
                   "scores are optimistic and favour memorised examples; pass valset= for an honest selection")
    return trainset


def more_demos(result: CandidateResult) -> int:
    """The tie-break of every search here: on an exact tie the candidate with more demos wins."""
    return demo_count(result.state)


class BootstrapFewShotWithRandomSearch(honing.Optimizer):
    """Random search over bootstrapped few-shot candidates, each scored on the valset; keeps the best."""

    requires_metric = True
    requires_labels = True

    def __init__(self, metric: Callable[..., Any] | None = None, *, num_candidate_programs: int = 16,
                 max_bootstrapped_demos: int = 4, max_labeled_demos: int = SEARCH_MAX_LABELED_DEMOS,
                 max_rounds: int = 1, metric_threshold: float | None = None, max_errors: int | None = None,
                 teacher_settings: Mapping[str, Any] | None = None, num_threads: int | None = None,
                 stop_at_score: float | None = None, seed: int = 0, display_progress: bool = True) -> None:
        """
        :param metric: ``metric(example, prediction, trace) -> bool | float``; scores candidates and gates
            which teacher runs become demos.
        :param num_candidate_programs: shuffled bootstrap candidates, besides zero-shot, labelled-only and
            the unshuffled bootstrap.
        :param max_bootstrapped_demos: the largest bootstrap size of a candidate (shuffles draw 1 … this).
        :param max_labeled_demos: demos per predictor in every candidate; labelled examples fill the
            slots bootstrapping leaves.
        :param stop_at_score: stop as soon as a candidate scores at least this fraction (in [0, 1]).
        :param num_threads: examples scored at once (hosted LMs); None: ``hn.configure(num_threads=...)``.
        :param max_errors: failed examples tolerated per bootstrap pass and per candidate evaluation; the
            next raises TooManyErrors (carrying the best program so far as `partial`).
        :param display_progress: a progress bar over candidates, with one over examples inside it.

        Ties: candidates with the same score are broken in favour of more demos, then the earlier one
        (DSPy keeps the earliest, which hands every exact tie to the zero-shot program).
        """
        owner = type(self).__name__
        check_count(owner, "num_candidate_programs", num_candidate_programs)
        check_count(owner, "max_bootstrapped_demos", max_bootstrapped_demos)
        check_count(owner, "max_labeled_demos", max_labeled_demos)
        check_count(owner, "max_rounds", max_rounds, minimum=1)
        check_count(owner, "max_errors", max_errors, optional=True)
        check_count(owner, "num_threads", num_threads, minimum=1, optional=True)
        metric_threshold = check_threshold(owner, metric_threshold)
        stop_at_score = check_fraction(owner, "stop_at_score", stop_at_score)
        teacher_settings = check_teacher_settings(owner, teacher_settings)
        super().__init__(metric, num_candidate_programs=num_candidate_programs,
                         max_bootstrapped_demos=max_bootstrapped_demos, max_labeled_demos=max_labeled_demos,
                         max_rounds=max_rounds, metric_threshold=metric_threshold, max_errors=max_errors,
                         teacher_settings=teacher_settings, num_threads=num_threads, stop_at_score=stop_at_score,
                         seed=seed)
        self.num_candidate_programs = num_candidate_programs
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.max_rounds = max_rounds
        self.metric_threshold = metric_threshold
        self.max_errors = max_errors
        self.teacher_settings = teacher_settings
        self.num_threads = num_threads
        self.stop_at_score = stop_at_score
        self.display_progress = display_progress
        #: the candidates of the last compile, best first (see `top_programs`)
        self.results: list[CandidateResult] = []
        self._base: Module | None = None

    # -- results beyond the winner ---------------------------------------------------------------------
    def top_programs(self, k: int = 3) -> list[Module]:
        """The `k` best candidates of the last compile as programs (best first), e.g. for an Ensemble."""
        if self._base is None:
            raise OptimizerError(f"{self.name}.top_programs: compile something first")
        return [apply_state(self._base.deepcopy(), r.state) for r in self.results[:k]]

    # -- the search ------------------------------------------------------------------------------------
    def optimize(self, program: Module, *, trainset: list[Example], valset: list[Example] | None,
                 teacher: Module | None, run_dir: Any = None, resume: bool = False, **kwargs: Any) -> Module:
        reject_unknown(self.name, kwargs)
        run_log = open_run_log(self, run_dir, resume)
        devset = selection_set(self, trainset, valset)
        builder = CandidateBuilder(self, program, trainset, teacher, run_log)
        evaluator = CandidateEvaluator(devset, self.metric, num_threads=self.num_threads,
                                       max_errors=self.max_errors, display_progress=self.display_progress,
                                       run_log=run_log, event="candidate")
        finished = run_log.finished("candidate") if run_log is not None else {}
        specs = candidate_specs(self.num_candidate_programs, self.max_bootstrapped_demos, self.seed)
        state = SearchState(tie_break=more_demos)
        extras: dict[str, dict[str, Any]] = {}
        budget_limited = stopped = False
        self._base = program.deepcopy().reset()
        bar = progress(len(specs), self.name, self.display_progress)
        with track_usage() as spent:
            try:
                for spec in specs:
                    result, built = self._candidate(spec, program, builder, evaluator, finished)
                    state.add(result)
                    extras[spec.key] = _extra(result, built)
                    if built is not None and built.budget_limited:
                        raise BudgetExceeded("the budget ran out while bootstrapping " + spec.key)
                    bar.update(1)
                    bar.set_postfix(best=f"{state.best.score:.3f}" if state.best else "-")
                    if self.stop_at_score is not None and result.score >= self.stop_at_score:
                        stopped = True
                        self.note(f"stopped after {spec.key}: score {result.score:.3f} >= stop_at_score "
                                  f"{self.stop_at_score}")
                        break
            except BudgetExceeded:
                if state.best is None:
                    raise
                budget_limited = True
                self.note(f"the budget ran out after {len(state.results)} of {len(specs)} candidates; "
                          "returning the best of those")
            except TooManyErrors as exc:
                best = self._finish(program, state, extras, builder, None, spent.total,
                                    budget_limited=False, stopped=False) if state.best is not None else None
                raise TooManyErrors(f"{self.name}: {exc} (after {len(state.results)} finished candidates; the "
                                    "best so far is this error's .partial)", partial=best) from exc
            finally:
                bar.close()
        return self._finish(program, state, extras, builder, run_log, spent.total,
                            budget_limited=budget_limited, stopped=stopped)

    def _candidate(self, spec: CandidateSpec, program: Module, builder: CandidateBuilder,
                   evaluator: CandidateEvaluator, finished: Mapping[str, Any]) -> tuple[CandidateResult, BuiltDemos | None]:
        params = spec.params
        logged = finished.get(spec.key)
        if logged is not None and logged.get("params") == params:
            return evaluator.evaluate(spec.key, program, params), None  # taken from the log, nothing spent
        built = builder.build(spec)
        candidate = apply_state(program.deepcopy(), {n: {"demos": d} for n, d in built.demos.items()})
        return evaluator.evaluate(spec.key, candidate, params), built

    def _finish(self, program: Module, state: SearchState, extras: dict[str, dict[str, Any]],
                builder: CandidateBuilder, run_log: RunLog | None, spent: Usage, *, budget_limited: bool,
                stopped: bool) -> Module:
        for note in builder.notes:
            if note not in self.notes:
                self.note(note)
        best = state.best
        assert best is not None
        ranked = sorted(state.results, key=lambda r: (-r.score, -more_demos(r)))
        self.results = ranked
        apply_state(program, best.state)
        _note_empty_predictors(self, program, builder.trainset)
        candidates = tuple({**r.summary(), **extras.get(r.key, {})} for r in state.results)
        program.compile_record = OptimizerRecord(
            name=self.name, score=best.score, scores={r.key: round(r.score, 6) for r in state.results},
            candidates=candidates, errors=state.errors + sum(e.get("bootstrap", {}).get("errors", 0)
                                                            for e in extras.values()),
            budget_limited=budget_limited)
        if run_log is not None:
            run_log.finish(summary={"best": best.key, "score": best.score, "candidates": len(state.results),
                                    "stopped_early": stopped, "budget_limited": budget_limited,
                                    "calls": spent.calls, "prompt_tokens": spent.prompt_tokens,
                                    "completion_tokens": spent.completion_tokens, "cost": spent.cost,
                                    "ranking": [[r.key, round(r.score, 6)] for r in ranked]},
                           points=[(r.key, r.score) for r in state.results],
                           title=f"{self.name}: best {best.key} ({best.score:.3f})")
        return program


def _extra(result: CandidateResult, built: BuiltDemos | None) -> dict[str, Any]:
    extra: dict[str, Any] = {"from_log": result.from_log}
    if built is not None and built.attempts:
        extra["bootstrap"] = built.summary()
    return extra


def _note_empty_predictors(optimizer: honing.Optimizer, program: Module, trainset: Sequence[Example]) -> None:
    for name, predictor in program.named_predictors():
        if not labeled_demos(predictor, trainset) and not predictor.demos:
            optimizer.note(f"predictor {name!r}: no training example has both its inputs and outputs")

