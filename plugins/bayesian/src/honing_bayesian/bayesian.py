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

import math
import random
from typing import Any

from honing.plugin_api import (
    CompileRun,
    Example,
    Module,
    Optimizer,
    OptimizerRecord,
    json_safe,
    resolve_lm,
)

from honing_bayesian import study as studies
from honing_bayesian.bayesian_settings import AUTO_PRESETS, BayesianSettings, preset_trials
from honing_bayesian.plan import make_plan
from honing_bayesian.proposer import DATA_BATCH_SIZE, MAX_DATA_BATCHES, PROPOSAL_ATTEMPTS, PROPOSAL_MAX_TOKENS
from honing_bayesian.trial_search import TrialSearch, requeue_full_evaluation


class BayesianSignatureOptimizer(Optimizer):
    """Instructions x demo sets per predictor, searched with seeded TPE (Optuna) on minibatches; resumable, multi-worker."""

    requires_metric = True
    requires_labels = True
    #: `storage` and `study_name` (the CLI's ``--storage``/``--study``) replace the constructor's for one
    #: compile; ``dry_run=True`` (``--dry-run``) prints the plan and sends nothing
    compile_options = frozenset({"storage", "study_name", "dry_run"})
    Settings = BayesianSettings

    def record_parameters(self) -> dict[str, Any]:
        # a storage URL is recorded with its password hidden
        storage = self.settings.storage
        return {**super().record_parameters(), "storage": studies.redact(storage) if storage else None}

    def optimize(self, program: Module, run: CompileRun) -> Module:
        """The plan (``run.artifacts["plan"]``; all a dry run does), then the study, then this worker's
        `TrialSearch`."""
        s = self.settings
        task_lm = resolve_lm(self.name, "task_model", s.task_model)
        prompt_lm = resolve_lm(self.name, "prompt_model", s.prompt_model)
        candidates, trials, devset = search_size(s, program, run.selection_set(), run)
        minibatching = s.minibatch and len(devset) > s.minibatch_size
        if s.minibatch and not minibatching:
            run.note(f"the valset has {len(devset)} examples, not more than "
                     f"minibatch_size={s.minibatch_size}: every trial is scored on all of them")
        bootstrap_passes = 0 if s.max_bootstrapped_demos == 0 else max(candidates - 2, 0) + \
            (1 if s.max_labeled_demos == 0 else 0)
        plan = make_plan(
            program, run.trainset, devset, demo_sets=1 if s.zero_shot else candidates,
            instruction_candidates=candidates, num_trials=trials,
            minibatch_size=s.minibatch_size if minibatching else None,
            full_eval_steps=s.minibatch_full_eval_steps,
            max_demos=max(s.max_bootstrapped_demos, s.max_labeled_demos), bootstrap_passes=bootstrap_passes,
            summary_calls=min(math.ceil(len(run.trainset) / DATA_BATCH_SIZE), MAX_DATA_BATCHES) + 1,
            proposal_attempts=PROPOSAL_ATTEMPTS, proposal_max_tokens=PROPOSAL_MAX_TOKENS, task_lm=task_lm,
            prompt_lm=prompt_lm)
        run.artifacts["plan"] = plan
        run.note(plan.describe())
        if run.options.get("dry_run"):
            print(f"{self.name} (dry run, nothing sent):\n{plan.describe()}", flush=True)
            program.compile_record = OptimizerRecord(name=self.name, scores={})
            return program

        with studies.quiet_optuna():
            study, leader, worker = self._join_study(program, run, devset, trials)
            search = TrialSearch(s, run, study, program, devset, worker=worker, task_lm=task_lm,
                                 prompt_lm=prompt_lm, candidates=candidates, trials=trials,
                                 minibatching=minibatching)
            search.setup(leader)
            return search.run_trials()

    def _join_study(self, program: Module, run: CompileRun, devset: list[Example],
                    trials: int) -> tuple[Any, bool, str]:
        """The study (``run.artifacts["study"]``), whether this worker created it and so leads the setup,
        and this worker's id. It lives in the given storage (reached before any LM call), else in the run
        directory, else in memory; a study made with other parameters or data is refused."""
        s = self.settings
        url = run.options.get("storage")
        url = url if url is not None else s.storage
        name = run.options.get("study_name")
        name = name if name is not None else s.study_name
        store = studies.open_storage(url, self.name, requeue_full_evaluation) if url is not None else None
        if url is None and run.log is not None:
            url = f"sqlite:///{run.log.dir.resolve() / 'study.db'}"
            name = name or "honing"
            store = studies.open_storage(url, self.name, requeue_full_evaluation)
        parameters = self.run_parameters()
        data = studies.fingerprint({
            "train": [e.to_json() for e in run.trainset], "val": [e.to_json() for e in devset],
            "program": json_safe({n: {"fields": [[f.name, f.role, f.type_name] for f in p.signature.fields],
                                      "instructions": p.signature.instructions, "demos": p.demos}
                                  for n, p in program.named_predictors()})})
        if name is None:
            name = f"honing-bayesian-{studies.fingerprint([parameters, data])}"
            if url is not None:
                run.note(f"study name {name!r} (derived from the parameters and data; pass study_name= to "
                         "choose)")
        if url is None:
            run.note("no storage and no run_dir: the Optuna study lives in memory, so an interrupted compile "
                     "cannot be resumed; pass run_dir= or storage= for that")
        worker = studies.worker_id()
        sampler = studies.make_sampler(s.seed, max(2, min(10, trials // 3)))
        study, leader = studies.open_study(store, name, sampler, self.name)
        if leader:
            studies.claim(study, parameters, data, self.name, worker)
        else:
            studies.check_study(study, self.name, parameters, data, worker)
        run.artifacts["study"] = study
        return study, leader, worker


def search_size(settings: BayesianSettings, program: Module, devset: list[Example],
                run: CompileRun) -> tuple[int, int, list[Example]]:
    """(candidates per predictor, trials, the valset used) for this program and data: the preset's, or
    the ones set by hand."""
    if settings.auto is None:
        candidates, trials, limit = settings.num_candidates, int(settings.num_trials or 0), None
    else:
        candidates, limit = AUTO_PRESETS[settings.auto]
        trials = preset_trials(candidates, len(program.named_predictors()), settings.zero_shot)
    valset = devset
    if limit is not None and len(devset) > limit:
        chosen = sorted(random.Random(f"{settings.seed}:valset").sample(range(len(devset)), limit))
        valset = [devset[i] for i in chosen]
        run.note(f"auto={settings.auto!r}: scoring on {limit} of the {len(devset)} validation examples "
                 "(a seeded sample)")
    return candidates, trials, valset
