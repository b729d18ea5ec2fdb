"""BayesianSignatureOptimizer: instructions × demo sets per predictor, searched with TPE (Optuna).

1. Candidates (once per study, by the leading worker; see `study`): `num_candidates` demo sets per
   predictor from the core's bootstrapping (`demosets`), and `num_candidates` instructions per
   predictor — the original plus proposals of the grounded proposer (`proposer`): a summary of the
   data, a description of the program and of the predictor's role, example demos and a tip. Unusable
   proposals are retried (bounded) and counted; a slot with nothing usable is dropped.
2. Trials: a seeded TPE sampler chooses, per predictor, an instruction index and a demo-set index
   (parameters ``<predictor>.instruction`` and ``<predictor>.demos``, named by the predictors' stable
   dotted names). A trial is scored on a minibatch of the valset (`minibatch_size` examples, drawn per
   trial number); every `minibatch_full_eval_steps` minibatch trials the configuration with the best
   mean minibatch score that has no full evaluation yet is scored on the whole valset (a trial of kind
   "full"), and once more at the end. The baseline — the student itself: original instructions and the
   student's own demos — is always the first full evaluation. When the valset is not larger than
   `minibatch_size` (or ``minibatch=False``) every trial is a full evaluation.
3. The result is the configuration with the best full-valset score among those that *clearly* beat
   the baseline (a paired sign test on the per-example scores, `confidence_z`), else the baseline; a
   tie keeps the earlier trial. So the result is never worse than the student on the valset, and a
   configuration that won by a few lucky examples of a small valset is not returned.

Every trial stores its configuration, instruction texts, demo ids, examples and score as trial user
attrs (optuna-dashboard shows a readable history), and the compiled program's record lists every trial.
`auto` presets ("light", "medium", "heavy") set the number of candidates, of trials and the valset size;
``auto=None`` with `num_trials` (and `num_candidates`) sets them by hand. Before anything is spent the
plan (predicted LM calls, tokens and cost) is logged; ``compile(..., dry_run=True)`` prints it and
sends no LM call.

Differences from DSPy's MIPROv2 / BayesianSignatureOptimizer (reference §6, §6.1, §13): the models
default to the configured LM at compile time, not at construction; every random choice has its own
seeded stream (and the sampler is seeded per trial, so several workers do not repeat each other); no
proposal is computed and thrown away; demo set 0 is the student's own demos, so configuration 0 is the
student; presets do not override `minibatch`; a valset smaller than the minibatch is used whole, with a
note, instead of being an error; parameter names are stable across runs; there is no stdin prompt;
the call counters are real (the record's usage).
"""

from __future__ import annotations

import datetime
import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import honing
from honing.data import Example
from honing.errors import BudgetExceeded, OptimizerError
from honing.modules import Module
from honing.optimizers.demos import sample_labeled
from honing.optimizers.record import OptimizerRecord
from honing.optimizers.search import CandidateEvaluator, apply_state
from honing.runs import RunLog

from honing_bayesian import study as studies
from honing_bayesian._common import (
    check_count,
    check_lm,
    check_number,
    clear_gain,
    comparable_parameters,
    gain_text,
    jsonable,
    open_run_log,
    reject_unknown,
    resolve_lm,
    selection_set,
)
from honing_bayesian.demosets import build_demo_sets, demo_ids
from honing_bayesian.plan import Plan, make_plan
from honing_bayesian.proposer import (
    DATA_BATCH_SIZE,
    GROUNDED_CONTEXT,
    MAX_DATA_BATCHES,
    PROPOSAL_MAX_TOKENS,
    TIPS,
    ProposeInstruction,
    grounded_inputs,
    propose,
    summarize_data,
    topic_of,
)
from honing_bayesian.text import Tally

log = logging.getLogger("honing.optimizers")

#: auto preset → (candidates per predictor, largest valset).
AUTO_PRESETS: dict[str, tuple[int, int]] = {"light": (6, 100), "medium": (12, 300), "heavy": (18, 1000)}
DEFAULT_NUM_CANDIDATES = 10
#: Proposal attempts per instruction slot (the first plus retries after unusable replies).
PROPOSAL_ATTEMPTS = 3
#: Seconds between checks while other workers finish their trials.
POLL = 0.5

MINIBATCH, FULL = "minibatch", "full"


def preset_trials(num_candidates: int, predictors: int, zero_shot: bool) -> int:
    """Trials of a preset: enough for TPE to see every candidate of every parameter a few times."""
    k = predictors if zero_shot else 2 * predictors
    return int(max(2 * k * math.log2(max(num_candidates, 2)), 1.5 * num_candidates))


def config_key(config: dict[str, int], names: list[str]) -> str:
    """``self=i2/d1`` (instruction 2, demo set 1), predictors joined by commas."""
    return ",".join(f"{n}=i{config.get(f'{n}.instruction', 0)}/d{config.get(f'{n}.demos', 0)}" for n in names)


class BayesianSignatureOptimizer(honing.Optimizer):
    """Instructions x demo sets per predictor, searched with seeded TPE (Optuna) on minibatches; resumable, multi-worker."""

    requires_metric = True
    requires_labels = True

    def __init__(self, metric: Callable[..., Any] | None = None, prompt_model: Any = None, task_model: Any = None,
                 num_candidates: int = DEFAULT_NUM_CANDIDATES, num_trials: int | None = None,
                 auto: str | None = "light", max_bootstrapped_demos: int = 4, max_labeled_demos: int = 4,
                 minibatch: bool = True, minibatch_size: int = 35, minibatch_full_eval_steps: int = 5,
                 storage: str | None = None, study_name: str | None = None, seed: int = 0, *,
                 init_temperature: float = 1.0, confidence_z: float = 1.0, num_threads: int | None = None,
                 max_errors: int | None = None, display_progress: bool = False) -> None:
        """
        :param metric: ``metric(example, prediction, trace=None) -> bool | float`` (scores in [0, 1]).
        :param prompt_model: the LM that summarizes the data and proposes instructions; None: the
            configured LM at compile time.
        :param task_model: the LM the program runs on while bootstrapping and scoring (predictors with an
            LM of their own keep it); None: the configured LM at compile time.
        :param num_candidates: instructions (the original included) and demo sets (the student's own
            included) per predictor; only with ``auto=None``.
        :param num_trials: TPE trials (minibatch trials when minibatching); only with ``auto=None``.
        :param auto: "light", "medium" or "heavy" set the candidates, trials and valset size (at most
            100, 300, 1000 examples, sampled with the seed); None: `num_candidates` and `num_trials`.
        :param max_bootstrapped_demos: bootstrapped demos per set (shuffled sets draw 1 … this).
        :param max_labeled_demos: demos per set in all: labelled examples fill what bootstrapping left.
        :param minibatch: score trials on `minibatch_size` examples and only the promising
            configurations on the whole valset (every `minibatch_full_eval_steps` trials).
        :param storage: an Optuna storage URL, e.g. ``postgresql://user:pass@host/db``, shared by every
            worker; None: SQLite in the run directory, or memory without one.
        :param study_name: the study's name in `storage` (workers with the same one run one study);
            None: derived from the parameters and the data.
        :param seed: seeds every random choice (demo sets, tips, valset sample, minibatches, sampler).
        :param init_temperature: the prompt model's sampling temperature for proposals.
        :param confidence_z: how clearly a configuration must beat the student on the full valset to be
            returned instead of it: its net gain, in examples, must reach `confidence_z` standard
            deviations of the per-example differences (a paired sign test; 1.0 is about 84% one-sided).
            0: the best full-valset score wins.
        :param num_threads: examples scored at once (hosted LMs); None: ``hn.configure(num_threads=...)``.
        :param max_errors: failed examples tolerated per bootstrap pass and per evaluation.
        """
        owner = type(self).__name__
        if auto is not None and auto not in AUTO_PRESETS:
            raise OptimizerError(f"{owner}: auto must be one of {', '.join(map(repr, AUTO_PRESETS))} or None, "
                                 f"got {auto!r}")
        if auto is not None and num_trials is not None:
            raise OptimizerError(f"{owner}: num_trials={num_trials} and auto={auto!r} are both set; the preset "
                                 "chooses the number of trials. Pass auto=None to set num_trials yourself")
        if auto is not None and num_candidates != DEFAULT_NUM_CANDIDATES:
            raise OptimizerError(f"{owner}: num_candidates={num_candidates} and auto={auto!r} are both set; the "
                                 f"preset chooses {AUTO_PRESETS[auto][0]} candidates. Pass auto=None to set them")
        if auto is None and num_trials is None:
            raise OptimizerError(f"{owner}: auto=None needs num_trials (and num_candidates), e.g. "
                                 f"{owner}(metric, auto=None, num_candidates=6, num_trials=10)")
        check_count(owner, "num_candidates", num_candidates, minimum=1)
        check_count(owner, "num_trials", num_trials, minimum=1, optional=True)
        check_count(owner, "max_bootstrapped_demos", max_bootstrapped_demos)
        check_count(owner, "max_labeled_demos", max_labeled_demos)
        check_count(owner, "minibatch_size", minibatch_size, minimum=1)
        check_count(owner, "minibatch_full_eval_steps", minibatch_full_eval_steps, minimum=1)
        check_count(owner, "num_threads", num_threads, minimum=1, optional=True)
        check_count(owner, "max_errors", max_errors, optional=True)
        check_number(owner, "init_temperature", init_temperature)
        check_number(owner, "confidence_z", confidence_z)
        check_lm(owner, "prompt_model", prompt_model)
        check_lm(owner, "task_model", task_model)
        for name, value in (("storage", storage), ("study_name", study_name)):
            if value is not None and not isinstance(value, str):
                raise OptimizerError(f"{owner}: {name} must be a string or None, got {type(value).__name__}")
        super().__init__(metric, prompt_model=prompt_model, task_model=task_model, num_candidates=num_candidates,
                         num_trials=num_trials, auto=auto, max_bootstrapped_demos=max_bootstrapped_demos,
                         max_labeled_demos=max_labeled_demos, minibatch=bool(minibatch), minibatch_size=minibatch_size,
                         minibatch_full_eval_steps=minibatch_full_eval_steps,
                         storage=studies.redact(storage) if storage else None, study_name=study_name, seed=seed,
                         init_temperature=float(init_temperature), confidence_z=float(confidence_z),
                         num_threads=num_threads, max_errors=max_errors, display_progress=display_progress)
        self.confidence_z = float(confidence_z)
        self.prompt_model = prompt_model
        self.task_model = task_model
        self.num_candidates = num_candidates
        self.num_trials = num_trials
        self.auto = auto
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.minibatch = bool(minibatch)
        self.minibatch_size = minibatch_size
        self.minibatch_full_eval_steps = minibatch_full_eval_steps
        self.storage = storage
        self.study_name = study_name
        self.init_temperature = float(init_temperature)
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.display_progress = display_progress
        #: the Optuna study of the last compile, and the plan of the last compile
        self.study: Any = None
        self.plan: Plan | None = None

    # -- settings of one compile -------------------------------------------------------------------------
    def _resolved(self, program: Module, devset: list[Example]) -> tuple[int, int, list[Example]]:
        """(candidates per predictor, trials, the valset used) for this program and data."""
        zero_shot = self.max_bootstrapped_demos == 0 and self.max_labeled_demos == 0
        predictors = len(program.named_predictors())
        if self.auto is None:
            candidates, trials, limit = self.num_candidates, int(self.num_trials or 0), None
        else:
            candidates, limit = AUTO_PRESETS[self.auto]
            trials = preset_trials(candidates, predictors, zero_shot)
        valset = devset
        if limit is not None and len(devset) > limit:
            chosen = sorted(random.Random(f"{self.seed}:valset").sample(range(len(devset)), limit))
            valset = [devset[i] for i in chosen]
            self.note(f"auto={self.auto!r}: scoring on {limit} of the {len(devset)} validation examples "
                      "(a seeded sample)")
        return candidates, trials, valset

    # -- the compile -------------------------------------------------------------------------------------
    def optimize(self, program: Module, *, trainset: list[Example], valset: list[Example] | None,
                 teacher: Module | None, run_dir: Any = None, resume: bool = False, storage: str | None = None,
                 study_name: str | None = None, dry_run: bool = False, **kwargs: Any) -> Module:
        reject_unknown(self.name, kwargs)
        task_lm = resolve_lm(self.name, "task_model", self.task_model)
        prompt_lm = resolve_lm(self.name, "prompt_model", self.prompt_model)
        devset = selection_set(self, trainset, valset)
        candidates, trials, devset = self._resolved(program, devset)
        minibatching = self.minibatch and len(devset) > self.minibatch_size
        if self.minibatch and not minibatching:
            self.note(f"the valset has {len(devset)} examples, not more than minibatch_size={self.minibatch_size}: "
                      "every trial is scored on all of them")
        zero_shot = self.max_bootstrapped_demos == 0 and self.max_labeled_demos == 0
        bootstrap_passes = 0 if self.max_bootstrapped_demos == 0 else max(candidates - 2, 0) + \
            (1 if self.max_labeled_demos == 0 else 0)
        self.plan = make_plan(
            program, trainset, devset, demo_sets=1 if zero_shot else candidates, instruction_candidates=candidates,
            num_trials=trials, minibatch_size=self.minibatch_size if minibatching else None,
            full_eval_steps=self.minibatch_full_eval_steps,
            max_demos=max(self.max_bootstrapped_demos, self.max_labeled_demos), bootstrap_passes=bootstrap_passes,
            summary_calls=min(math.ceil(len(trainset) / DATA_BATCH_SIZE), MAX_DATA_BATCHES) + 1,
            proposal_attempts=PROPOSAL_ATTEMPTS, proposal_max_tokens=PROPOSAL_MAX_TOKENS, task_lm=task_lm,
            prompt_lm=prompt_lm)
        self.note(self.plan.describe())
        if dry_run:
            print(f"{self.name} (dry run, nothing sent):\n{self.plan.describe()}", flush=True)
            program.compile_record = OptimizerRecord(name=self.name, scores={})
            return program

        url = storage if storage is not None else self.storage
        name = study_name if study_name is not None else self.study_name
        if resume and run_dir is None and url is None:
            raise OptimizerError(f"{self.name}.compile: resume=True needs run_dir= or storage= (where the study is)")
        searches: list[_Search] = []

        def on_stale(study: Any, trial: Any) -> None:
            searches[0].on_stale(study, trial)

        # a given storage is reached first, before the run directory is touched or any LM call is made
        store = studies.open_storage(url, self.name, on_stale) if url is not None else None
        # with a storage, the study itself is what is continued: resume only matters for a run directory
        run_log = open_run_log(self, run_dir, resume and run_dir is not None)
        if url is None and run_dir is not None:
            url = f"sqlite:///{Path(run_dir).resolve() / 'study.db'}"
            name = name or "honing"
            store = studies.open_storage(url, self.name, on_stale)
        parameters = comparable_parameters(self)
        data = studies.fingerprint({
            "train": [e.to_json() for e in trainset], "val": [e.to_json() for e in devset],
            "program": jsonable({n: {"fields": [[f.name, f.role, f.type_name] for f in p.signature.fields],
                                     "instructions": p.signature.instructions, "demos": p.demos}
                                 for n, p in program.named_predictors()})})
        if name is None:
            name = f"honing-bayesian-{studies.fingerprint([parameters, data])}"
            if url is not None:
                self.note(f"study name {name!r} (derived from the parameters and data; pass study_name= to choose)")
        if url is None:
            self.note("no storage and no run_dir: the Optuna study lives in memory, so an interrupted compile "
                      "cannot be resumed; pass run_dir= or storage= for that")
        search = _Search(self, program, trainset, devset, teacher, task_lm=task_lm, prompt_lm=prompt_lm,
                         candidates=candidates, trials=trials, minibatching=minibatching, run_log=run_log)
        searches.append(search)
        with studies.quiet_optuna():
            sampler = studies.make_sampler(self.seed, max(2, min(10, trials // 3)))
            study, leader = studies.open_study(store, name, sampler, self.name)
            if leader:
                studies.claim(study, parameters, data, self.name, search.worker)
            else:
                studies.check_study(study, self.name, parameters, data, search.worker)
            self.study = study
            search.study = study
            search.setup(leader)
            return search.run()


class _Search:
    """One worker's part of a BayesianSignatureOptimizer compile."""

    def __init__(self, optimizer: BayesianSignatureOptimizer, program: Module, trainset: list[Example],
                 valset: list[Example], teacher: Module | None, *, task_lm: Any, prompt_lm: Any, candidates: int,
                 trials: int, minibatching: bool, run_log: RunLog | None) -> None:
        self.opt = optimizer
        self.program = program
        self.names = [n for n, _ in program.named_predictors()]
        self.trainset = trainset
        self.valset = valset
        self.teacher = teacher
        self.task_lm = task_lm
        self.prompt_lm = prompt_lm
        self.candidates = candidates
        self.trials = trials
        self.minibatching = minibatching
        self.run_log = run_log
        self.worker = studies.worker_id()
        self.study: Any = None
        self.space: dict[str, Any] = {}
        self.evaluator = CandidateEvaluator(valset, optimizer.metric, num_threads=optimizer.num_threads or 1,
                                            max_errors=optimizer.max_errors,
                                            display_progress=optimizer.display_progress, run_log=run_log,
                                            event="trial")
        self.budget_limited = False

    # -- candidates ------------------------------------------------------------------------------------
    def setup(self, leader: bool) -> None:
        study = self.study
        if not leader and studies.wait_for_setup(study, self.worker, say=self.opt.note):
            self.space = study.user_attrs[studies.ATTR_SETUP]
            self.opt.note(f"candidates read from the study {study.study_name!r} (built by another worker or an "
                          "earlier session)")
        else:
            with studies.SetupHeartbeat(study, self.worker):
                self.space = self.build()
                study.set_user_attr(studies.ATTR_SETUP, self.space)
                if not any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)):
                    baseline = {p: 0 for p in self.param_names()}
                    study.enqueue_trial(baseline, user_attrs={"kind": FULL, "baseline": True,
                                                              "key": config_key(baseline, self.names),
                                                              "config": baseline})
                study.set_user_attr(studies.ATTR_READY, True)
        tally = Tally.from_dict(self.space.get("tally", {}))
        if tally.accepted or tally.rejected:
            self.opt.note(tally.describe())
        for name in self.names:
            texts = self.space["predictors"][name]["instructions"]
            listed = "; ".join(f"[{i}] {t!r}" for i, t in enumerate(texts))
            self.opt.note(f"predictor {name!r}: {len(texts)} instruction candidates: {listed}")
            keys = self.space["predictors"][name]["demo_keys"]
            self.opt.note(f"predictor {name!r}: {len(keys)} demo sets: {', '.join(keys)}")

    def build(self) -> dict[str, Any]:
        """Demo sets and instruction proposals (this worker leads the setup)."""
        opt = self.opt
        tally = Tally()
        sets = build_demo_sets(self.program, self.trainset, self.teacher, opt.metric, n=self.candidates,
                               max_bootstrapped_demos=opt.max_bootstrapped_demos,
                               max_labeled_demos=opt.max_labeled_demos, seed=opt.seed, task_lm=self.task_lm,
                               max_errors=opt.max_errors)
        if self.run_log is not None:
            self.run_log.event("demo_sets", sets=[{"key": s.key, "bootstrapped": s.bootstrapped, "errors": s.errors,
                                                   "demos": jsonable(s.demos)} for s in sets])
        summary = summarize_data(self.trainset, lm=self.prompt_lm, temperature=opt.init_temperature, tally=tally)
        predictors: dict[str, Any] = {}
        proposals = []
        examples_for_prompt = sample_labeled(self.program, self.trainset, 3, seed=f"{opt.seed}:proposer")
        for index, (name, predictor) in enumerate(self.program.named_predictors()):
            instructions = [predictor.signature.instructions]
            for slot in range(1, self.candidates):
                shown = sets[1 + (slot - 1) % (len(sets) - 1)] if len(sets) > 1 else sets[0]
                demos = sorted(shown.demos[name], key=lambda d: d.get("_source") != "bootstrap") or \
                    examples_for_prompt[name]
                tip = random.Random(f"{opt.seed}:{name}:tip:{slot}").choice(TIPS)
                inputs = grounded_inputs(dataset_summary=summary, program=self.program, name=name, demos=demos,
                                         tip=tip)
                text, tries = propose(ProposeInstruction, inputs, lm=self.prompt_lm,
                                      temperature=opt.init_temperature, rollout=index * self.candidates + slot,
                                      attempts=PROPOSAL_ATTEMPTS, taken=instructions, tally=tally,
                                      context_keys=GROUNDED_CONTEXT, topic=topic_of(predictor))
                proposals.append({"predictor": name, "slot": slot, "tip": tip, "demo_set": shown.key,
                                  "instruction": text, "tries": tries})
                if text is not None:
                    instructions.append(text)
            predictors[name] = {"instructions": instructions,
                                "demo_sets": [jsonable(s.demos[name]) for s in sets],
                                "demo_keys": [s.key for s in sets]}
        if self.run_log is not None:
            self.run_log.event("proposals", dataset_summary=summary, proposals=proposals, tally=tally.to_dict())
        return {"predictors": predictors, "dataset_summary": summary, "tally": tally.to_dict(),
                "errors": sum(s.errors for s in sets), "proposals": proposals}

    def param_names(self) -> list[str]:
        return [f"{n}.{part}" for n in self.names for part in ("instruction", "demos")]

    def choices(self, param: str) -> list[int]:
        name, part = param.rsplit(".", 1)
        entry = self.space["predictors"][name]
        return list(range(len(entry["instructions"] if part == "instruction" else entry["demo_sets"])))

    def combinations(self) -> int:
        total = 1
        for param in self.param_names():
            total *= len(self.choices(param))
        return total

    def candidate(self, config: dict[str, int]) -> Module:
        program = self.program.deepcopy()
        state = {}
        for name in self.names:
            entry = self.space["predictors"][name]
            state[name] = {"instructions": entry["instructions"][config.get(f"{name}.instruction", 0)],
                           "demos": entry["demo_sets"][config.get(f"{name}.demos", 0)]}
        return apply_state(program, state)

    # -- trials ----------------------------------------------------------------------------------------
    def objective(self, trial: Any) -> float:
        """One trial: choose (or take the enqueued) configuration, score it, store what it was."""
        trial.set_user_attr("worker", self.worker)
        given = trial.user_attrs
        kind = given.get("kind") or (MINIBATCH if self.minibatching else FULL)
        config = {p: trial.suggest_categorical(p, self.choices(p)) for p in self.param_names()}
        key = config_key(config, self.names)
        if kind == MINIBATCH:
            indices = sorted(random.Random(f"{self.opt.seed}:minibatch:{trial.number}").sample(
                range(len(self.valset)), self.opt.minibatch_size))
            eval_key = f"{key}@{studies.fingerprint(indices)}"
        else:
            indices = list(range(len(self.valset)))
            eval_key = f"{key}@all"
        for attr, value in (("kind", kind), ("key", key), ("config", config)):
            if given.get(attr) != value:
                trial.set_user_attr(attr, value)
        trial.set_user_attr("eval_key", eval_key)
        entries = {n: self.space["predictors"][n] for n in self.names}
        trial.set_user_attr("instructions", {n: e["instructions"][config[f"{n}.instruction"]]
                                             for n, e in entries.items()})
        trial.set_user_attr("demos", {n: demo_ids(e["demo_sets"][config[f"{n}.demos"]]) for n, e in entries.items()})
        evaluation: dict[str, Any] = {"examples": indices if kind == MINIBATCH else "all", "n_examples": len(indices)}
        State = self._state()
        if kind == FULL:  # two workers that scheduled the same full evaluation at once: one does it
            twin = next((t for t in self.study.get_trials(deepcopy=False, states=(State.RUNNING,))
                         if t.number < trial.number and t.user_attrs.get("eval_key") == eval_key), None)
            if twin is not None:
                import optuna

                trial.set_user_attr("duplicate_of", twin.number)
                raise optuna.TrialPruned(f"trial {twin.number} is running the same full evaluation")
        earlier = next((t for t in self.study.get_trials(deepcopy=False, states=(State.COMPLETE,))
                        if t.user_attrs.get("eval_key") == eval_key), None)
        if earlier is not None:  # the same configuration on the same examples: its score, nothing spent
            before = earlier.user_attrs.get("evaluation", {})
            trial.set_user_attr("evaluation", {**evaluation, "errors": 0, "reused_from": earlier.number,
                                               **({"example_scores": before["example_scores"]}
                                                  if "example_scores" in before else {})})
            return float(earlier.value)
        with honing.context(lm=self.task_lm):
            result = self.evaluator.evaluate(eval_key, self.candidate(config), {"config": config},
                                             devset=[self.valset[i] for i in indices])
        if kind == FULL:  # the final choice compares full evaluations example by example
            evaluation["example_scores"] = list(result.example_scores)
        trial.set_user_attr("evaluation", {**evaluation, "errors": result.n_errors, "usage": result.usage.to_dict(),
                                           "seconds": round(result.wall_time, 3)})
        return result.score

    @staticmethod
    def _state() -> Any:
        import optuna

        return optuna.trial.TrialState

    def on_stale(self, study: Any, trial: Any) -> None:
        """A trial of a dead worker was failed: a full evaluation is enqueued again (the sampler replaces a
        minibatch trial by itself)."""
        if trial.user_attrs.get("kind") != FULL:
            return
        config = trial.user_attrs.get("config") or dict(trial.params)
        if not config:
            return
        State = self._state()
        live = (State.COMPLETE, State.RUNNING, State.WAITING)
        if any(t.user_attrs.get("kind") == FULL and t.user_attrs.get("key") == trial.user_attrs.get("key")
               for t in study.get_trials(deepcopy=False, states=live)):
            return
        attrs = {k: trial.user_attrs[k] for k in ("kind", "baseline", "key", "config") if k in trial.user_attrs}
        study.enqueue_trial(config, user_attrs={**attrs, "retry_of": trial.number})

    def reap(self) -> None:
        """Fail the RUNNING trials of dead workers: those of this host at once, others by heartbeat."""
        State = self._state()
        for trial in self.study.get_trials(deepcopy=False, states=(State.RUNNING,)):
            # a trial without a worker was created by a process killed before `objective` could name it
            # (its first statement): after a few seconds nobody will ever finish it, and Optuna's heartbeat
            # cannot fail it either (it never beat)
            orphan = (trial.user_attrs.get("worker") is None and trial.datetime_start is not None
                      and (datetime.datetime.now() - trial.datetime_start).total_seconds() > 5)
            if orphan or studies.is_dead_here(trial.user_attrs.get("worker")):
                try:
                    self.study.tell(trial.number, state=State.FAIL)
                except Exception as exc:  # noqa: BLE001 - another worker failed it first
                    log.debug("trial %d: already finished (%s)", trial.number, exc)
                    continue
                self.opt.note(f"trial {trial.number} was left running by a dead worker "
                              f"({trial.user_attrs.get('worker')}): marked failed")
                self.on_stale(self.study, trial)
        import optuna

        optuna.storages.fail_stale_trials(self.study)

    def schedule(self, trials: list[Any]) -> bool:
        """Enqueue a full evaluation when one is due (see the module docstring); True when it did."""
        State = self._state()
        if not self.minibatching:
            return False
        mini = [t for t in trials if t.state == State.COMPLETE and t.user_attrs.get("kind") == MINIBATCH]
        fulls = [t for t in trials if t.user_attrs.get("kind") == FULL
                 and t.state in (State.COMPLETE, State.RUNNING, State.WAITING)]
        have = sum(1 for t in fulls if not t.user_attrs.get("baseline"))
        due = len(mini) // self.opt.minibatch_full_eval_steps
        final = len(mini) >= self.trials
        if not mini or (due <= have and not final):
            return False
        means: dict[str, list[float]] = {}
        first: dict[str, int] = {}
        configs: dict[str, dict[str, int]] = {}
        for t in mini:
            key = t.user_attrs["key"]
            means.setdefault(key, []).append(float(t.value))
            first.setdefault(key, t.number)
            configs[key] = t.user_attrs["config"]
        done = {t.user_attrs.get("key") for t in fulls}
        ranked = sorted(means, key=lambda k: (-sum(means[k]) / len(means[k]), first[k]))
        if due > have:
            choice = next((k for k in ranked if k not in done), None)
        else:  # the final one: only the overall best mean, if it has no full score yet
            choice = ranked[0] if ranked[0] not in done else None
        if choice is None:
            return False
        mean = sum(means[choice]) / len(means[choice])
        self.study.enqueue_trial(configs[choice], user_attrs={"kind": FULL, "key": choice, "config": configs[choice],
                                                              "minibatch_mean": round(mean, 6)})
        return True

    def run(self) -> Module:
        study = self.study
        State = self._state()
        opt = self.opt
        announced = exhausted = False
        while True:
            self.reap()
            # one snapshot decides both what to enqueue and whether this worker is done, so a trial that
            # finishes in between cannot make it leave without the full evaluation it made due
            trials = study.get_trials(deepcopy=False)
            if self.schedule(trials):
                continue
            waiting = any(t.state == State.WAITING for t in trials)
            kind = MINIBATCH if self.minibatching else FULL
            started = sum(1 for t in trials if t.user_attrs.get("kind", kind) == kind
                          and not t.user_attrs.get("baseline") and t.state in (State.COMPLETE, State.RUNNING))
            scored = {t.user_attrs.get("key") for t in trials
                      if t.state == State.COMPLETE and t.user_attrs.get("kind") == FULL}
            if started < self.trials and len(scored) >= self.combinations():
                started = self.trials  # every configuration has its full score: nothing left to search
                if not exhausted:
                    opt.note(f"all {self.combinations()} configurations were scored on the full valset; "
                             "stopped there")
                    exhausted = True
            if waiting or started < self.trials:
                try:
                    study.optimize(self.objective, n_trials=1, catch=())
                except BudgetExceeded:
                    if not self._fulls():
                        raise
                    self.budget_limited = True
                    opt.note("the budget ran out; returning the best configuration fully scored before that")
                    break
                continue
            if any(t.state == State.RUNNING for t in trials):
                if not announced:
                    log.info("%s: waiting for other workers' running trials", opt.name)
                    announced = True
                time.sleep(POLL)
                continue
            break
        return self.finish()

    def _fulls(self) -> list[Any]:
        State = self._state()
        return [t for t in self.study.get_trials(deepcopy=False, states=(State.COMPLETE,))
                if t.user_attrs.get("kind") == FULL]

    def finish(self) -> Module:
        opt = self.opt
        fulls = self._fulls()
        if not fulls:
            raise OptimizerError(f"{opt.name}: no configuration was fully scored")
        baseline = next((t for t in fulls if t.user_attrs.get("baseline")), None)
        top = max(fulls, key=lambda t: (float(t.value), bool(t.user_attrs.get("baseline")), -t.number))
        best = self._choose(fulls, baseline, top)
        program = self.candidate(best.user_attrs["config"])
        apply_state(self.program, {n: {"instructions": p.signature.instructions, "demos": p.demos}
                                   for n, p in program.named_predictors()})
        trials = self.study.get_trials(deepcopy=False)
        entries = [{**self._entry(t), **({"chosen": True} if t.number == best.number else {})} for t in trials]
        workers = {t.user_attrs.get("worker") for t in trials if t.user_attrs.get("worker")}
        if len(workers) > 1:
            opt.note(f"{len(trials)} trials by {len(workers)} workers")
        scores = {"best": round(float(best.value), 6)}
        if baseline is not None:
            scores["baseline"] = round(float(baseline.value), 6)
        for t in fulls:
            scores[f"full:{t.user_attrs['key']}"] = round(float(t.value), 6)
        errors = int(self.space.get("errors", 0)) + sum(int(t.user_attrs.get("evaluation", {}).get("errors", 0))
                                                        for t in trials)
        self.program.compile_record = OptimizerRecord(
            name=opt.name, score=float(best.value), scores=scores, candidates=tuple(jsonable(entries)), errors=errors,
            budget_limited=self.budget_limited)
        opt.note(f"chose trial {best.number} ({best.user_attrs['key']}): {float(best.value):.3f} on the full valset"
                 + (f" (student {float(baseline.value):.3f})" if baseline is not None else ""))
        if self.run_log is not None:
            self.run_log.finish(
                summary={"best": best.user_attrs["key"], "score": float(best.value),
                         "baseline": float(baseline.value) if baseline is not None else None,
                         "trials": len(trials), "study": self.study.study_name,
                         "budget_limited": self.budget_limited},
                points=[(f"#{e['trial']} {e['kind'][0]} {e['key']}", e["score"]) for e in entries
                        if e["score"] is not None],
                title=f"{opt.name}: best {best.user_attrs['key']} ({float(best.value):.3f})")
        return self.program

    def _choose(self, fulls: list[Any], baseline: Any, top: Any) -> Any:
        """The best full evaluation that clearly beats the baseline (see `confidence_z`), else the baseline."""
        if baseline is None or top is baseline:
            return top
        reference = baseline.user_attrs.get("evaluation", {}).get("example_scores")
        clear = [t for t in fulls if t is not baseline and float(t.value) > float(baseline.value)
                 and clear_gain(t.user_attrs.get("evaluation", {}).get("example_scores"), reference,
                                self.opt.confidence_z)]
        if clear:
            return max(clear, key=lambda t: (float(t.value), -t.number))
        scores = top.user_attrs.get("evaluation", {}).get("example_scores")
        self.opt.note(f"the best configuration ({top.user_attrs['key']}, {float(top.value):.3f}; "
                      f"{gain_text(scores, reference)}) did not clearly beat the student "
                      f"({float(baseline.value):.3f}) on the valset (confidence_z={self.opt.confidence_z:g}): "
                      "kept the student")
        return baseline

    def _entry(self, t: Any) -> dict[str, Any]:
        a = t.user_attrs
        evaluation = a.get("evaluation", {})
        entry = {"trial": t.number, "state": t.state.name, "kind": a.get("kind", MINIBATCH), "key": a.get("key"),
                 "score": round(float(t.value), 6) if t.value is not None else None,
                 "n_examples": evaluation.get("n_examples"), "params": a.get("config", dict(t.params)),
                 "instructions": a.get("instructions", {}), "demos": a.get("demos", {}),
                 "errors": evaluation.get("errors", 0)}
        for extra in ("baseline", "minibatch_mean", "retry_of", "duplicate_of"):
            if extra in a:
                entry[extra] = a[extra]
        if "reused_from" in evaluation:
            entry["reused_from"] = evaluation["reused_from"]
        usage = evaluation.get("usage")
        if usage:
            entry.update({k: usage.get(k, 0) for k in ("calls", "prompt_tokens", "completion_tokens", "cost",
                                                       "cache_hits")})
        return entry
