"""BootstrapFewShotWithOptuna: a seeded Optuna TPE study choosing, per predictor, which demo set to use.

The demo sets are those random search would build (labelled-only, the unshuffled bootstrap and
`num_candidate_programs` shuffled bootstraps; see `honing_bootstrap.random_search`), plus "zero_shot"
(none). A predictor whose sets are all empty is not searched: it stays without demos. Each trial picks
one set id per predictor and scores that program on the valset; a combination already scored is not
scored again (the trial reuses the score, recorded as `duplicate_of`, and does not count). The search
stops once `num_trials` programs have been scored, or every combination has been.

``storage="sqlite:///study.db"`` (any Optuna storage URL) makes a compile resumable: the study (with
``study_name``) is loaded if it exists, its finished trials are kept and not re-run, and the demo sets,
stored in the study, are not rebuilt. Each trial stores its set ids, score, errors and usage as user
attributes: ``demo_sets`` (predictor → set id), ``score``, and ``result`` (errors, usage, demo count,
the program's state), or ``duplicate_of`` (the trial whose score it reuses).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
from honing.plugin_api import (
    BudgetExceeded,
    CandidateEvaluator,
    CandidateResult,
    CompileRun,
    Example,
    InvalidSetting,
    Module,
    Optimizer,
    OptimizerError,
    OptimizerRecord,
    RunLog,
    SearchState,
    TooManyErrors,
    Usage,
    apply_state,
    count,
    demo_count,
    json_safe,
    more_demos,
    progress,
    safe_url,
    setting,
    track_usage,
    with_driver,
)

from honing_bootstrap.random_search import (
    CandidateBuilder,
    DemoBudget,
    SearchSettings,
    candidate_specs,
    demo_budget,
)

ZERO_SHOT = "zero_shot"


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - optuna is a dependency of honing-bootstrap
        raise OptimizerError("BootstrapFewShotWithOptuna needs optuna: pip install optuna") from exc
    return optuna


@contextlib.contextmanager
def _quiet_optuna(optuna: Any) -> Iterator[None]:
    """Optuna logs every trial at INFO; honing reports trials itself (progress bar, run log, record)."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def _storage_url(_: Any, attribute: Any, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidSetting(f"{attribute.name} must be an Optuna storage URL such as 'sqlite:///study.db', "
                             f"got {type(value).__name__}")


def _study_name(_: Any, attribute: Any, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidSetting(f"{attribute.name} must be a non-empty string, got {value!r}")


@attrs.frozen
class OptunaSettings(SearchSettings):
    """
    :param num_candidate_programs: shuffled bootstraps whose demo sets the study chooses from.
    :param num_trials: programs to score (trials repeating a scored choice are free and do not
        count); None: ``num_candidate_programs + 3``, as many as random search scores.
    :param storage: an Optuna storage URL (``sqlite:///path.db``, a database URL) to keep the study in,
        so an interrupted compile resumes with its finished trials; None: in memory. Recorded without
        credentials.
    :param study_name: the study's name in `storage` (default ``honing-bootstrap-optuna-seed<seed>``).

    The other parameters are BootstrapFewShotWithRandomSearch's (but `stop_at_score`). Ties between
    trials go to the program with more demos, then the earlier trial.
    """

    num_trials: int | None = setting(None, check=count(minimum=1, optional=True), kw_only=True)
    storage: str | None = setting(None, check=_storage_url, kw_only=True)
    study_name: str | None = setting(None, check=_study_name, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if self.num_trials is None:
            object.__setattr__(self, "num_trials", self.num_candidate_programs + 3)


class BootstrapFewShotWithOptuna(Optimizer):
    """Seeded Optuna TPE search over bootstrapped demo sets, one choice per predictor; resumable."""

    requires_metric = True
    requires_labels = True
    #: the CLI's ``--storage``/``--study`` replace the constructor's for one compile
    compile_options = frozenset({"storage", "study_name"})
    Settings = OptunaSettings

    def record_parameters(self) -> dict[str, Any]:
        # a storage URL with a password is recorded without it
        return {**super().record_parameters(), "storage": _shown(self.settings.storage)}

    # -- demo sets -------------------------------------------------------------------------------------
    def demo_sets(self, program: Module, trainset: list[Example], teacher: Module | None,
                  run_log: RunLog | None, budget: DemoBudget | None = None,
                  ) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], int, list[str]]:
        """Per predictor: set id → demos ("zero_shot" first, then each distinct non-empty set). Also the
        number of errors the bootstrap passes counted, and what the user should be told about them.
        `budget`: how many demos a set may hold (default: `demo_budget` of the settings)."""
        s = self.settings
        budget = budget or demo_budget(s, program, trainset)
        builder = CandidateBuilder(s, program, trainset, teacher, run_log, max_labeled=budget.max_labeled)
        names = [n for n, _ in program.named_predictors()]
        sets: dict[str, dict[str, list[dict[str, Any]]]] = {n: {ZERO_SHOT: []} for n in names}
        seen: dict[str, set[str]] = {n: set() for n in names}
        errors = 0
        specs = candidate_specs(s.num_candidate_programs, budget.max_bootstrapped, s.seed, zero_shot=False)
        bar = progress(len(specs), f"{self.name} demo sets", s.display_progress)
        try:
            for spec in specs:
                built = builder.build(spec)
                errors += built.errors
                if built.budget_limited:
                    raise BudgetExceeded(f"the budget ran out while bootstrapping demo set {spec.key}")
                for name in names:
                    demos = json_safe(built.demos[name])
                    fingerprint = json.dumps(demos, sort_keys=True)
                    if demos and fingerprint not in seen[name]:
                        seen[name].add(fingerprint)
                        sets[name][spec.key] = demos
                bar.update(1)
        finally:
            bar.close()
        return sets, errors, builder.notes

    # -- the study -------------------------------------------------------------------------------------
    def _study(self, optuna: Any, storage: str | None, study_name: str | None) -> Any:
        seed = self.settings.seed
        name = study_name or (f"honing-bootstrap-optuna-seed{seed}" if storage else None)
        sampler = optuna.samplers.TPESampler(seed=seed)
        try:
            url = with_driver(storage) if storage is not None else None
            return optuna.create_study(storage=url, study_name=name, direction="maximize", sampler=sampler,
                                       load_if_exists=True)
        except Exception as exc:
            raise OptimizerError(f"{self.name}: cannot open the Optuna study {name!r} in storage "
                                 f"{_shown(storage)!r}: {exc}") from exc

    def _check_study(self, study: Any) -> None:
        """A stored study is only continued with the same parameters (else its trials mean something else)."""
        mine = json_safe({k: v for k, v in self.record_parameters().items()
                          if k not in ("num_trials", "num_threads", "storage", "study_name")})
        theirs = study.user_attrs.get("honing_parameters")
        if theirs is None:
            if study.trials:
                raise OptimizerError(f"{self.name}: the Optuna study {study.study_name!r} already has trials that "
                                     "honing did not make; choose another study_name")
            study.set_user_attr("honing_optimizer", self.name)
            study.set_user_attr("honing_parameters", mine)
            return
        if theirs != mine:
            diff = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
            details = ", ".join(f"{k}: {theirs.get(k)!r} then, {mine.get(k)!r} now" for k in diff)
            raise OptimizerError(f"{self.name}: the Optuna study {study.study_name!r} was run with other "
                                 f"parameters ({details}); use another study_name to start afresh")

    def optimize(self, program: Module, run: CompileRun) -> Module:
        """`storage` and `study_name` given to `compile` (the CLI's ``--storage``/``--study``) replace the
        constructor's for this compile. The study is `run.artifacts["study"]`."""
        owner = f"{self.name}.compile"
        storage, study_name = run.options.get("storage"), run.options.get("study_name")
        try:
            _storage_url(None, _Named("storage"), storage)
            _study_name(None, _Named("study_name"), study_name)
        except InvalidSetting as exc:
            raise OptimizerError(f"{owner}: {exc}") from None
        storage = storage if storage is not None else self.settings.storage
        study_name = study_name if study_name is not None else self.settings.study_name
        optuna = _import_optuna()
        devset = run.selection_set()
        with _quiet_optuna(optuna):
            study = self._study(optuna, storage, study_name)
            run.artifacts["study"] = study
            self._check_study(study)
            if storage is not None:
                run.note(f"Optuna study {study.study_name!r} in {_shown(storage)}")
            fingerprint = _fingerprint(run.trainset, devset, program)
            stored = study.user_attrs.get("demo_sets")
            if stored is not None and study.user_attrs.get("data") != fingerprint:
                raise OptimizerError(f"{self.name}: the Optuna study {study.study_name!r} was run on other "
                                     "trainset/valset data or another program; use another study_name")
            bootstrap_errors = 0
            if stored is not None:
                sets = stored
            else:
                budget = demo_budget(self.settings, program, run.trainset)
                budget.report(run)
                sets, bootstrap_errors, notes = self.demo_sets(program, run.trainset, run.teacher, run.log, budget)
                for note in notes:
                    run.note(note)
                # the data first: stored demo sets are the mark of a finished set-up, and must never be
                # seen (after a crash, or by another process) without the data they were built from
                study.set_user_attr("data", fingerprint)
                study.set_user_attr("demo_sets", sets)
            with track_usage() as spent:
                return self._search(optuna, study, program, run, sets, devset, bootstrap_errors, spent)

    def _search(self, optuna: Any, study: Any, program: Module, run: CompileRun,
                sets: dict[str, dict[str, list[dict[str, Any]]]], devset: list[Example], bootstrap_errors: int,
                spent: Any) -> Module:
        s = self.settings
        TrialState = optuna.trial.TrialState
        searched = {name: list(options) for name, options in sets.items() if len(options) > 1}
        for name, options in sets.items():
            if len(options) <= 1:
                run.note(f"predictor {name!r}: no demo set could be built (no training example has its fields "
                          "and no run passed); it stays without demos")
        distributions = {name: optuna.distributions.CategoricalDistribution(options)
                         for name, options in searched.items()}
        total_combinations = 1
        for options in searched.values():
            total_combinations *= len(options)
        # a trial left RUNNING by an interrupted session never finishes: mark it failed
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
        evaluator = CandidateEvaluator(devset, s.metric, num_threads=s.num_threads, max_errors=s.max_errors,
                                       display_progress=s.display_progress, run_log=run.log, event="trial")
        state = SearchState(tie_break=more_demos)
        scored: dict[str, CandidateResult] = {}
        trial_numbers: dict[str, list[int]] = {}
        # finished trials of earlier sessions: their results are reused, not re-run
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if "demo_sets" not in trial.user_attrs:
                continue
            key = _key(trial.params, sets)
            trial_numbers.setdefault(key, []).append(trial.number)
            if key not in scored and "result" in trial.user_attrs:
                result = _result_from_trial(trial, key)
                scored[key] = result
                state.add(result)
        # `num_trials` counts programs scored: a trial that repeats a scored combination is free and does
        # not count (bounded, so a sampler that keeps repeating itself cannot loop for ever)
        done = len(scored)
        asked, max_asks = 0, 20 * s.num_trials
        budget_limited = False
        bar = progress(s.num_trials, self.name, s.display_progress)
        bar.update(min(done, s.num_trials))
        try:
            while done < s.num_trials and len(scored) < total_combinations and asked < max_asks:
                asked += 1
                trial = study.ask(distributions)
                choice = {name: trial.params[name] for name in searched}
                key = _key(choice, sets)
                trial.set_user_attr("demo_sets", {name: choice.get(name, ZERO_SHOT) for name in sets})
                fresh = key not in scored
                if not fresh:
                    result = scored[key]
                    trial.set_user_attr("duplicate_of", trial_numbers[key][0])
                else:
                    candidate = apply_state(program.deepcopy(), {name: {"demos": sets[name][choice.get(name, ZERO_SHOT)]}
                                                                 for name in sets})
                    try:
                        result = evaluator.evaluate(key, candidate, {"demo_sets": choice})
                    except BudgetExceeded:
                        study.tell(trial, state=TrialState.FAIL)
                        raise
                    except TooManyErrors:
                        study.tell(trial, state=TrialState.FAIL)
                        raise
                    scored[key] = result
                    state.add(result)
                    _store_result(trial, result)
                trial_numbers.setdefault(key, []).append(trial.number)
                trial.set_user_attr("score", result.score)
                study.tell(trial, result.score)
                if fresh:
                    done += 1
                    bar.update(1)
                bar.set_postfix(best=f"{state.best.score:.3f}" if state.best else "-")
        except BudgetExceeded:
            if state.best is None:
                raise
            budget_limited = True
            run.note(f"the budget ran out after {done} trials; returning the best of those")
        except TooManyErrors as exc:
            partial = self._finish(program, state, trial_numbers, None, spent.total, bootstrap_errors, False, done) \
                if state.best is not None else None
            raise TooManyErrors(f"{self.name}: {exc} (after {done} finished trials; the best so far is this "
                                "error's .partial)", partial=partial) from exc
        finally:
            bar.close()
        if done < s.num_trials and len(scored) >= total_combinations:
            run.note(f"all {total_combinations} combinations of demo sets were scored; stopped there")
        if state.best is None:  # nothing to search: every predictor has a single option
            candidate = apply_state(program.deepcopy(), {name: {"demos": sets[name][ZERO_SHOT]} for name in sets})
            state.add(evaluator.evaluate(_key({}, sets), candidate, {"demo_sets": {}}))
        return self._finish(program, state, trial_numbers, run.log, spent.total, bootstrap_errors, budget_limited,
                            done)

    def _finish(self, program: Module, state: SearchState, trial_numbers: dict[str, list[int]],
                run_log: RunLog | None, spent: Any, bootstrap_errors: int, budget_limited: bool, done: int) -> Module:
        best = state.best
        assert best is not None
        apply_state(program, best.state)
        candidates = tuple({**r.summary(), "trials": trial_numbers.get(r.key, []), "from_log": r.from_log}
                           for r in state.results)
        program.compile_record = OptimizerRecord(
            name=self.name, score=best.score, scores={r.key: round(r.score, 6) for r in state.results},
            candidates=candidates, errors=state.errors + bootstrap_errors, budget_limited=budget_limited)
        if run_log is not None:
            run_log.finish(summary={"best": best.key, "score": best.score, "trials": done,
                                    "programs_scored": len(state.results), "budget_limited": budget_limited,
                                    "calls": spent.calls, "prompt_tokens": spent.prompt_tokens,
                                    "completion_tokens": spent.completion_tokens, "cost": spent.cost},
                           points=[(r.key, r.score) for r in state.results],
                           title=f"{self.name}: best {best.key} ({best.score:.3f})")
        return program


@attrs.frozen
class _Named:
    """Stands in for an attrs field where a compile option is checked like the setting of that name."""

    name: str


def _shown(storage: str | None) -> str | None:
    """A storage URL as it may be recorded or printed: one with a user or password is not shown."""
    return storage if storage is None or safe_url(storage) else "<storage URL with credentials>"


def _key(choice: Mapping[str, str], sets: Mapping[str, Any]) -> str:
    """A trial's program, named by its choice per predictor ("self=shuffle_3"; all zero-shot: "zero_shot")."""
    parts = [f"{name}={choice[name]}" for name in sets if name in choice]
    return ",".join(parts) if parts else ZERO_SHOT


def _store_result(trial: Any, result: CandidateResult) -> None:
    """The trial's details in one user attribute (each attribute is a write to the storage)."""
    trial.set_user_attr("result", {"errors": result.n_errors, "n_examples": result.n_examples,
                                   "demos": demo_count(result.state), "usage": result.usage.to_dict(),
                                   "seconds": round(result.wall_time, 3), "state": json_safe(result.state)})


def _result_from_trial(trial: Any, key: str) -> CandidateResult:
    stored = trial.user_attrs["result"]
    return CandidateResult(key, float(trial.user_attrs.get("score", trial.value)), int(stored.get("errors", 0)),
                           Usage(), 0.0, {"demo_sets": dict(trial.params)}, stored["state"],
                           int(stored.get("n_examples", 0)), from_log=True)


def _fingerprint(trainset: list[Example], devset: list[Example], program: Module) -> str:
    """A hash of the data and the program's predictors, so a stored study is not resumed on other data."""
    raw = json.dumps({"train": [e.to_json() for e in trainset], "dev": [e.to_json() for e in devset],
                      "predictors": [[n, [f.name for f in p.signature.fields]] for n, p in program.named_predictors()]},
                     sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]
