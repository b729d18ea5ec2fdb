"""One worker's part of a `BayesianSignatureOptimizer` compile: the candidates, then the trials.

`TrialSearch` is given the optimizer's frozen settings, the compile's `CompileRun` (its data, run log and
notes) and the Optuna study this worker has opened and identified (see `study`). `setup` builds the
candidates when this worker leads (demo sets, then instruction proposals; see `demosets`, `proposer`) or
reads those the leader stored; `run_trials` runs trials until the study has its `trials` (minibatch
trials, with full evaluations scheduled between them; see the `bayesian` module docstring) and returns
the program with the chosen configuration and its record.
"""

from __future__ import annotations

import datetime
import logging
import random
import time
from typing import Any

import honing
from honing.plugin_api import (
    BudgetExceeded,
    CandidateEvaluator,
    CompileRun,
    Example,
    Module,
    OptimizerError,
    OptimizerRecord,
    apply_state,
    clear_gain,
    gain_text,
    json_safe,
    sample_labeled,
)

from honing_bayesian import study as studies
from honing_bayesian.bayesian_settings import BayesianSettings
from honing_bayesian.demosets import build_demo_sets, demo_ids
from honing_bayesian.proposer import (
    GROUNDED_CONTEXT,
    PROPOSAL_ATTEMPTS,
    TIPS,
    ProposeInstruction,
    grounded_inputs,
    propose,
    summarize_data,
    topic_of,
)
from honing_bayesian.text import Tally

log = logging.getLogger("honing.optimizers")

#: Seconds between checks while other workers finish their trials.
POLL = 0.5

MINIBATCH, FULL = "minibatch", "full"


def config_key(config: dict[str, int], names: list[str]) -> str:
    """``self=i2/d1`` (instruction 2, demo set 1), predictors joined by commas."""
    return ",".join(f"{n}=i{config.get(f'{n}.instruction', 0)}/d{config.get(f'{n}.demos', 0)}" for n in names)


def _trial_state() -> Any:
    import optuna

    return optuna.trial.TrialState


def requeue_full_evaluation(study: Any, trial: Any) -> None:
    """A trial of a dead worker was failed: a full evaluation is enqueued again (the sampler replaces a
    minibatch trial by itself). The storage's stale-trial callback, and `TrialSearch.reap`'s."""
    if trial.user_attrs.get("kind") != FULL:
        return
    config = trial.user_attrs.get("config") or dict(trial.params)
    if not config:
        return
    State = _trial_state()
    live = (State.COMPLETE, State.RUNNING, State.WAITING)
    if any(t.user_attrs.get("kind") == FULL and t.user_attrs.get("key") == trial.user_attrs.get("key")
           for t in study.get_trials(deepcopy=False, states=live)):
        return
    attrs = {k: trial.user_attrs[k] for k in ("kind", "baseline", "key", "config") if k in trial.user_attrs}
    study.enqueue_trial(config, user_attrs={**attrs, "retry_of": trial.number})


class TrialSearch:
    """One worker's part of a BayesianSignatureOptimizer compile (see the module docstring)."""

    def __init__(self, settings: BayesianSettings, run: CompileRun, study: Any, program: Module,
                 valset: list[Example], *, worker: str, task_lm: Any, prompt_lm: Any, candidates: int,
                 trials: int, minibatching: bool) -> None:
        self.settings = settings
        self.run = run
        self.study = study
        self.worker = worker
        self.program = program
        self.names = [n for n, _ in program.named_predictors()]
        self.valset = valset
        self.task_lm = task_lm
        self.prompt_lm = prompt_lm
        self.candidates = candidates
        self.trials = trials
        self.minibatching = minibatching
        self.space: dict[str, Any] = {}
        self.evaluator = CandidateEvaluator(valset, settings.metric, num_threads=settings.num_threads or 1,
                                            max_errors=settings.max_errors,
                                            display_progress=settings.display_progress, run_log=run.log,
                                            event="trial")
        self.budget_limited = False

    # -- candidates ------------------------------------------------------------------------------------
    def setup(self, leader: bool) -> None:
        study = self.study
        if not leader and studies.wait_for_setup(study, self.worker, say=self.run.note):
            self.space = study.user_attrs[studies.ATTR_SETUP]
            self.run.note(f"candidates read from the study {study.study_name!r} (built by another worker or "
                          "an earlier session)")
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
            self.run.note(tally.describe())
        for name in self.names:
            texts = self.space["predictors"][name]["instructions"]
            listed = "; ".join(f"[{i}] {t!r}" for i, t in enumerate(texts))
            self.run.note(f"predictor {name!r}: {len(texts)} instruction candidates: {listed}")
            keys = self.space["predictors"][name]["demo_keys"]
            self.run.note(f"predictor {name!r}: {len(keys)} demo sets: {', '.join(keys)}")

    def build(self) -> dict[str, Any]:
        """Demo sets and instruction proposals (this worker leads the setup)."""
        s = self.settings
        tally = Tally()
        sets = build_demo_sets(self.program, self.run.trainset, self.run.teacher, s.metric, n=self.candidates,
                               max_bootstrapped_demos=s.max_bootstrapped_demos,
                               max_labeled_demos=s.max_labeled_demos, seed=s.seed, task_lm=self.task_lm,
                               max_errors=s.max_errors)
        if self.run.log is not None:
            self.run.log.event("demo_sets", sets=[{"key": d.key, "bootstrapped": d.bootstrapped,
                                                   "errors": d.errors, "demos": json_safe(d.demos)}
                                                  for d in sets])
        summary = summarize_data(self.run.trainset, lm=self.prompt_lm, temperature=s.init_temperature,
                                 tally=tally)
        predictors: dict[str, Any] = {}
        proposals = []
        examples_for_prompt = sample_labeled(self.program, self.run.trainset, 3, seed=f"{s.seed}:proposer")
        for index, (name, predictor) in enumerate(self.program.named_predictors()):
            instructions = [predictor.signature.instructions]
            for slot in range(1, self.candidates):
                shown = sets[1 + (slot - 1) % (len(sets) - 1)] if len(sets) > 1 else sets[0]
                demos = sorted(shown.demos[name], key=lambda d: d.get("_source") != "bootstrap") or \
                    examples_for_prompt[name]
                tip = random.Random(f"{s.seed}:{name}:tip:{slot}").choice(TIPS)
                inputs = grounded_inputs(dataset_summary=summary, program=self.program, name=name,
                                         demos=demos, tip=tip)
                text, tries = propose(ProposeInstruction, inputs, lm=self.prompt_lm,
                                      temperature=s.init_temperature, rollout=index * self.candidates + slot,
                                      attempts=PROPOSAL_ATTEMPTS, taken=instructions, tally=tally,
                                      context_keys=GROUNDED_CONTEXT, topic=topic_of(predictor))
                proposals.append({"predictor": name, "slot": slot, "tip": tip, "demo_set": shown.key,
                                  "instruction": text, "tries": tries})
                if text is not None:
                    instructions.append(text)
            predictors[name] = {"instructions": instructions,
                                "demo_sets": [json_safe(d.demos[name]) for d in sets],
                                "demo_keys": [d.key for d in sets]}
        if self.run.log is not None:
            self.run.log.event("proposals", dataset_summary=summary, proposals=proposals,
                               tally=tally.to_dict())
        return {"predictors": predictors, "dataset_summary": summary, "tally": tally.to_dict(),
                "errors": sum(d.errors for d in sets), "proposals": proposals}

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
            indices = sorted(random.Random(f"{self.settings.seed}:minibatch:{trial.number}").sample(
                range(len(self.valset)), self.settings.minibatch_size))
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
        trial.set_user_attr("demos", {n: demo_ids(e["demo_sets"][config[f"{n}.demos"]])
                                      for n, e in entries.items()})
        evaluation: dict[str, Any] = {"examples": indices if kind == MINIBATCH else "all",
                                      "n_examples": len(indices)}
        State = _trial_state()
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
        trial.set_user_attr("evaluation", {**evaluation, "errors": result.n_errors,
                                           "usage": result.usage.to_dict(),
                                           "seconds": round(result.wall_time, 3)})
        return result.score

    def reap(self) -> None:
        """Fail the RUNNING trials of dead workers: those of this host at once, others by heartbeat."""
        State = _trial_state()
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
                self.run.note(f"trial {trial.number} was left running by a dead worker "
                              f"({trial.user_attrs.get('worker')}): marked failed")
                requeue_full_evaluation(self.study, trial)
        import optuna

        optuna.storages.fail_stale_trials(self.study)

    def schedule(self, trials: list[Any]) -> bool:
        """Enqueue a full evaluation when one is due (see the module docstring); True when it did."""
        State = _trial_state()
        if not self.minibatching:
            return False
        mini = [t for t in trials if t.state == State.COMPLETE and t.user_attrs.get("kind") == MINIBATCH]
        fulls = [t for t in trials if t.user_attrs.get("kind") == FULL
                 and t.state in (State.COMPLETE, State.RUNNING, State.WAITING)]
        have = sum(1 for t in fulls if not t.user_attrs.get("baseline"))
        due = len(mini) // self.settings.minibatch_full_eval_steps
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
        self.study.enqueue_trial(configs[choice], user_attrs={"kind": FULL, "key": choice,
                                                              "config": configs[choice],
                                                              "minibatch_mean": round(mean, 6)})
        return True

    def run_trials(self) -> Module:
        study = self.study
        State = _trial_state()
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
                    self.run.note(f"all {self.combinations()} configurations were scored on the full "
                                  "valset; stopped there")
                    exhausted = True
            if waiting or started < self.trials:
                try:
                    study.optimize(self.objective, n_trials=1, catch=())
                except BudgetExceeded:
                    if not self._fulls():
                        raise
                    self.budget_limited = True
                    self.run.note("the budget ran out; returning the best configuration fully scored before "
                                  "that")
                    break
                continue
            if any(t.state == State.RUNNING for t in trials):
                if not announced:
                    log.info("%s: waiting for other workers' running trials", self.run.optimizer)
                    announced = True
                time.sleep(POLL)
                continue
            break
        return self.finish()

    def _fulls(self) -> list[Any]:
        State = _trial_state()
        return [t for t in self.study.get_trials(deepcopy=False, states=(State.COMPLETE,))
                if t.user_attrs.get("kind") == FULL]

    def finish(self) -> Module:
        fulls = self._fulls()
        if not fulls:
            raise OptimizerError(f"{self.run.optimizer}: no configuration was fully scored")
        baseline = next((t for t in fulls if t.user_attrs.get("baseline")), None)
        top = max(fulls, key=lambda t: (float(t.value), bool(t.user_attrs.get("baseline")), -t.number))
        best = self._choose(fulls, baseline, top)
        program = self.candidate(best.user_attrs["config"])
        apply_state(self.program, {n: {"instructions": p.signature.instructions, "demos": p.demos}
                                   for n, p in program.named_predictors()})
        trials = self.study.get_trials(deepcopy=False)
        entries = [{**self._entry(t), **({"chosen": True} if t.number == best.number else {})}
                   for t in trials]
        workers = {t.user_attrs.get("worker") for t in trials if t.user_attrs.get("worker")}
        if len(workers) > 1:
            self.run.note(f"{len(trials)} trials by {len(workers)} workers")
        scores = {"best": round(float(best.value), 6)}
        if baseline is not None:
            scores["baseline"] = round(float(baseline.value), 6)
        for t in fulls:
            scores[f"full:{t.user_attrs['key']}"] = round(float(t.value), 6)
        errors = int(self.space.get("errors", 0)) + sum(
            int(t.user_attrs.get("evaluation", {}).get("errors", 0)) for t in trials)
        self.program.compile_record = OptimizerRecord(
            name=self.run.optimizer, score=float(best.value), scores=scores,
            candidates=tuple(json_safe(entries)), errors=errors, budget_limited=self.budget_limited)
        self.run.note(f"chose trial {best.number} ({best.user_attrs['key']}): {float(best.value):.3f} on the "
                      "full valset"
                      + (f" (student {float(baseline.value):.3f})" if baseline is not None else ""))
        if self.run.log is not None:
            self.run.log.finish(
                summary={"best": best.user_attrs["key"], "score": float(best.value),
                         "baseline": float(baseline.value) if baseline is not None else None,
                         "trials": len(trials), "study": self.study.study_name,
                         "budget_limited": self.budget_limited},
                points=[(f"#{e['trial']} {e['kind'][0]} {e['key']}", e["score"]) for e in entries
                        if e["score"] is not None],
                title=f"{self.run.optimizer}: best {best.user_attrs['key']} ({float(best.value):.3f})")
        return self.program

    def _choose(self, fulls: list[Any], baseline: Any, top: Any) -> Any:
        """The best full evaluation that clearly beats the baseline (see `confidence_z`), else the
        baseline."""
        if baseline is None or top is baseline:
            return top
        reference = baseline.user_attrs.get("evaluation", {}).get("example_scores")
        clear = [t for t in fulls if t is not baseline and float(t.value) > float(baseline.value)
                 and clear_gain(t.user_attrs.get("evaluation", {}).get("example_scores"), reference,
                                self.settings.confidence_z)]
        if clear:
            return max(clear, key=lambda t: (float(t.value), -t.number))
        scores = top.user_attrs.get("evaluation", {}).get("example_scores")
        self.run.note(f"the best configuration ({top.user_attrs['key']}, {float(top.value):.3f}; "
                      f"{gain_text(scores, reference)}) did not clearly beat the student "
                      f"({float(baseline.value):.3f}) on the valset "
                      f"(confidence_z={self.settings.confidence_z:g}): kept the student")
        return baseline

    def _entry(self, t: Any) -> dict[str, Any]:
        a = t.user_attrs
        evaluation = a.get("evaluation", {})
        entry = {"trial": t.number, "state": t.state.name, "kind": a.get("kind", MINIBATCH),
                 "key": a.get("key"),
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
