"""BootstrapFewShotWithRandomSearch: build many few-shot candidates, score each on the valset, keep the best.

Candidates, in order: ``zero_shot`` (no demos), ``labeled`` (labelled demos only: by default every one
that fits the context), ``bootstrap`` (a
BootstrapFewShot pass over the trainset in its own order), then ``shuffle_0`` … ``shuffle_{N-1}``: a
bootstrap pass over a seeded shuffle of the trainset with a random number of bootstrapped demos (1 …
`max_bootstrapped_demos`) and its own labelled sample. The shuffle and the size come from independent
RNG streams, both derived from (seed, candidate index), so candidate i is the same whatever N is.

Each candidate is built and then scored on the valset, one after another, examples in a fixed order
(`honing.plugin_api.CandidateEvaluator`), so the embedded model reuses the candidate's demo
prefix across examples; a hosted LM runs `num_threads` examples at a time.

Candidates are sized by what the context holds, not by a fixed cap: by default each carries every usable
labelled demo that fits its predictor's prompt (`fit_demos`, measured with the model's tokenizer), because
for a small model the number of demos in the prompt matters most; an explicit `max_labeled_demos` is used
as given, as in the reference. The winner is chosen by a paired comparison against the incumbent (the
``labeled`` program), so a candidate that wins by a few lucky validation examples is not taken
(`RandomSearchSettings` states the rule).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import attrs
from honing.plugin_api import (
    BudgetExceeded,
    BuiltDemos,
    CandidateEvaluator,
    CandidateResult,
    CompileRun,
    DemoCount,
    DemoFit,
    Example,
    Module,
    Optimizer,
    OptimizerRecord,
    RunLog,
    SearchState,
    TooManyErrors,
    Usage,
    apply_state,
    build_demos,
    count,
    fit_demos,
    fraction,
    labeled_demos,
    make_teacher,
    more_demos,
    number,
    progress,
    sample_labeled,
    setting,
    shortfall_note,
    track_usage,
)

from honing_bootstrap.fewshot import BootstrapSettings


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

    def __init__(self, settings: BootstrapSettings, program: Module, trainset: list[Example],
                 teacher: Module | None, run_log: RunLog | None, *, max_labeled: DemoCount | None = None) -> None:
        self.settings = settings
        #: labelled demos per candidate: what fits each predictor's context, or the setting as given
        self.max_labeled = settings.max_labeled_demos if max_labeled is None else max_labeled
        self.program = program
        self.trainset = trainset
        self.teacher = teacher
        self.run_log = run_log
        self.notes: list[str] = []
        self._teacher_program: Module | None = None

    def teacher_program(self) -> Module:
        if self._teacher_program is None:
            self._teacher_program = make_teacher(self.program, self.trainset, self.teacher,
                                                 max_labeled_demos=self.max_labeled,
                                                 seed=self.settings.seed)
        return self._teacher_program

    def build(self, spec: CandidateSpec) -> BuiltDemos:
        s = self.settings
        if spec.kind == "zero_shot":
            return BuiltDemos({name: [] for name, _ in self.program.named_predictors()})
        if spec.kind == "labeled":
            return BuiltDemos(sample_labeled(self.program, self.trainset, self.max_labeled,
                                             seed=spec.labeled_seed))
        order = shuffled_order(len(self.trainset), s.seed, spec.index) if spec.kind == "shuffle" else None
        built = build_demos(self.program, self.trainset, self.teacher_program(), s.metric, key=spec.key,
                            params=spec.params, max_bootstrapped_demos=spec.max_bootstrapped_demos,
                            max_labeled_demos=self.max_labeled, seed=spec.labeled_seed, order=order,
                            max_rounds=s.max_rounds, metric_threshold=s.metric_threshold,
                            max_errors=s.max_errors, teacher_settings=s.teacher_settings, run_log=self.run_log)
        note = shortfall_note(built, spec.max_bootstrapped_demos, len(self.trainset), f"{spec.key}: ")
        # one note for the first shortfall is enough: every candidate visits the same examples
        if note and not any("bootstrapped" in n for n in self.notes):
            self.notes.append(note)
        return built


@attrs.frozen
class DemoBudget:
    """The labelled demos per predictor and the bootstrap size a compile's candidates may use, and the
    measurement behind them (None when `max_labeled_demos` was given)."""

    max_labeled: DemoCount
    max_bootstrapped: int
    fit: DemoFit | None = None

    def report(self, run: CompileRun) -> None:
        """Say what did not fit (notes), and log the measurement."""
        if self.fit is None:
            return
        for note in self.fit.notes():
            run.note(note)
        if run.log is not None:
            run.log.event("demo_fit", **self.fit.to_json())


def demo_budget(settings: SearchSettings, program: Module, trainset: list[Example]) -> DemoBudget:
    """`max_labeled_demos` None: what fits each predictor's context (`fit_demos`); bootstrapped demos are
    capped by it too, and none are bootstrapped when not one demo fits. A number is used as given."""
    if settings.max_labeled_demos is not None:
        return DemoBudget(settings.max_labeled_demos, settings.max_bootstrapped_demos)
    fit = fit_demos(program, trainset)
    return DemoBudget(fit.counts, min(settings.max_bootstrapped_demos, min(fit.counts.values(), default=0)), fit)


@attrs.frozen
class SearchSettings(BootstrapSettings):
    """What both searches of this package add to BootstrapFewShot's settings."""

    num_candidate_programs: int = setting(16, check=count(), kw_only=True)
    max_labeled_demos: int | None = setting(None, check=count(optional=True), kw_only=True)
    num_threads: int | None = setting(None, check=count(minimum=1, optional=True), run_neutral=True,
                                      kw_only=True)
    display_progress: bool = setting(True, run_neutral=True, recorded=False, kw_only=True)


@attrs.frozen
class RandomSearchSettings(SearchSettings):
    """
    :param metric: ``metric(example, prediction, trace) -> bool | float``; scores candidates and gates
        which teacher runs become demos.
    :param num_candidate_programs: shuffled bootstrap candidates, besides zero-shot, labelled-only and
        the unshuffled bootstrap.
    :param max_bootstrapped_demos: the largest bootstrap size of a candidate (shuffles draw 1 … this).
    :param max_labeled_demos: demos per predictor in every candidate; labelled examples fill the
        slots bootstrapping leaves. None (the default): every usable training example that fits the
        predictor's prompt with room for the query and its answer, measured with the model's tokenizer
        (`fit_demos`); a number: that many, as in the reference.
    :param confidence_z: how clearly a candidate must beat the current best to replace it (see below).
    :param stop_at_score: stop as soon as a candidate scores at least this fraction (in [0, 1]).
    :param num_threads: examples scored at once (hosted LMs); None: ``hn.configure(num_threads=...)``.
    :param max_errors: failed examples tolerated per bootstrap pass and per candidate evaluation; the
        next raises TooManyErrors (carrying the best program so far as `partial`).
    :param display_progress: a progress bar over candidates, with one over examples inside it.

    The other parameters are BootstrapFewShot's.

    Selection (the rule, stated): the ``labeled`` candidate — every labelled demo that fits — is the
    incumbent. Any other candidate replaces the current best only when it beats it clearly
    on the same validation examples: its net gain in examples must reach `confidence_z` standard
    deviations of the per-example differences (a paired sign test; the default 1.645 is the usual 95%
    one-sided level, so +2 of 2 changed examples is noise and +3 of 3 is not). Ties and
    wins within that noise keep the incumbent, the program with the most demos. ``confidence_z=0``: any
    strict gain wins (on a tie the incumbent stays; DSPy keeps the earliest candidate, which hands every
    exact tie to the zero-shot program).
    """

    stop_at_score: float | None = setting(None, check=fraction, kw_only=True)
    confidence_z: float = setting(1.645, check=number(), kw_only=True)


class BootstrapFewShotWithRandomSearch(Optimizer):
    """Random search over bootstrapped few-shot candidates, each scored on the valset; keeps the best."""

    requires_metric = True
    requires_labels = True
    Settings = RandomSearchSettings

    def optimize(self, program: Module, run: CompileRun) -> Module:
        s = self.settings
        devset = run.selection_set()
        budget = demo_budget(s, program, run.trainset)
        budget.report(run)
        builder = CandidateBuilder(s, program, run.trainset, run.teacher, run.log, max_labeled=budget.max_labeled)
        evaluator = CandidateEvaluator(devset, s.metric, num_threads=s.num_threads, max_errors=s.max_errors,
                                       display_progress=s.display_progress, run_log=run.log, event="candidate")
        finished = run.log.finished("candidate") if run.log is not None else {}
        specs = candidate_specs(s.num_candidate_programs, budget.max_bootstrapped, s.seed)
        state = SearchState(tie_break=more_demos, confidence_z=s.confidence_z, incumbent="labeled")
        extras: dict[str, dict[str, Any]] = {}
        budget_limited = stopped = False
        bar = progress(len(specs), self.name, s.display_progress)
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
                    if s.stop_at_score is not None and result.score >= s.stop_at_score:
                        stopped = True
                        run.note(f"stopped after {spec.key}: score {result.score:.3f} >= stop_at_score "
                                 f"{s.stop_at_score}")
                        break
            except BudgetExceeded:
                if state.best is None:
                    raise
                budget_limited = True
                run.note(f"the budget ran out after {len(state.results)} of {len(specs)} candidates; "
                         "returning the best of those")
            except TooManyErrors as exc:
                best = self._finish(program, run, state, extras, builder, None, spent.total,
                                    budget_limited=False, stopped=False) if state.best is not None else None
                raise TooManyErrors(f"{self.name}: {exc} (after {len(state.results)} finished candidates; the "
                                    "best so far is this error's .partial)", partial=best) from exc
            finally:
                bar.close()
        return self._finish(program, run, state, extras, builder, run.log, spent.total,
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

    def _finish(self, program: Module, run: CompileRun, state: SearchState, extras: dict[str, dict[str, Any]],
                builder: CandidateBuilder, run_log: RunLog | None, spent: Usage, *, budget_limited: bool,
                stopped: bool) -> Module:
        for note in builder.notes:
            if note not in run.notes:
                run.note(note)
        best = state.best
        assert best is not None
        ranked = sorted(state.results, key=lambda r: (-r.score, -more_demos(r)))
        run.ranked = ranked
        apply_state(program, best.state)
        _note_empty_predictors(run, program)
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


def _note_empty_predictors(run: CompileRun, program: Module) -> None:
    for name, predictor in program.named_predictors():
        if not labeled_demos(predictor, run.trainset) and not predictor.demos:
            run.note(f"predictor {name!r}: no training example has both its inputs and outputs")

