"""SignatureOptimizer: coordinate ascent over instructions, one predictor at a time.

For each predictor in turn (in the program's predictor order), with every other predictor holding the
best instruction found so far:

1. round 0: the prompt model proposes ``breadth - 1`` rewrites of the current instruction; with the
   current instruction itself that makes `breadth` candidates;
2. rounds 1 … ``depth - 1``: the best attempts so far, with their scores (worst first), are shown to
   the prompt model, which proposes `breadth` more;
3. every candidate is scored on the valset (the trainset when there is none: noted), and the
   predictor keeps the best one that *clearly* beats the original (a paired sign test on the
   per-example scores, `confidence_z`): a rewrite that won on one or two lucky examples of a small
   valset is not kept. Ties keep the earlier candidate, so the original wins a tie.

The original instruction is always scored, in the program as it stands, so the result is never worse
than the student on the valset. A program state that was already scored (e.g. the original
instruction of the next predictor, which is the previous predictor's winner) is not scored again.

Differences from DSPy's COPRO (reference §5, §13): candidates are scored on the valset, not the
trainset; no output-field prefixes are proposed (no adapter renders them); predictors are optimized
one after another against the others' best (DSPy re-scores every earlier candidate at every depth);
proposals are cleaned and unusable ones retried (see `text.clean_proposal`), and the record counts
them. LM calls: prompt model ``P · (breadth - 1 + (depth - 1) · breadth)`` proposals (plus retries);
task model at most ``|valset| · P · (breadth · depth)`` program calls, minus states already scored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import honing
from honing.data import Example
from honing.errors import BudgetExceeded, OptimizerError
from honing.lm.usage import track_usage
from honing.modules import Module
from honing.optimizers.record import OptimizerRecord
from honing.optimizers.search import CandidateEvaluator, CandidateResult, apply_state, program_state, progress
from honing.runs import RunLog

from honing_bayesian._common import (
    check_count,
    check_lm,
    check_number,
    clear_gain,
    gain_text,
    jsonable,
    open_run_log,
    reject_unknown,
    resolve_lm,
    selection_set,
)
from honing_bayesian.proposer import (
    ProposeFromAttempts,
    ProposeVariation,
    attempts_listing,
    propose,
    task_description,
    topic_of,
)
from honing_bayesian.text import Tally

#: Proposal attempts per slot (the first plus retries after unusable replies).
PROPOSAL_ATTEMPTS = 3


def _fingerprint(state: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(jsonable(state), sort_keys=True).encode()).hexdigest()[:16]


class SignatureOptimizer(honing.Optimizer):
    """Coordinate ascent over instructions: a prompt model proposes rewrites, each scored on the valset."""

    requires_metric = True
    requires_labels = True

    def __init__(self, metric: Callable[..., Any] | None = None, prompt_model: Any = None, breadth: int = 10,
                 depth: int = 3, init_temperature: float = 1.4, seed: int = 0, *, confidence_z: float = 1.0,
                 num_threads: int | None = None, max_errors: int | None = None,
                 display_progress: bool = False) -> None:
        """
        :param metric: ``metric(example, prediction, trace=None) -> bool | float`` (scores in [0, 1]).
        :param prompt_model: the LM that writes instructions; None: the configured LM at compile time.
        :param breadth: candidates per round (>= 2): round 0 holds the current instruction and
            ``breadth - 1`` rewrites, every later round `breadth` new ones.
        :param depth: rounds per predictor (>= 1); rounds after the first see the best attempts so far.
        :param init_temperature: the prompt model's sampling temperature.
        :param seed: recorded for reproducibility; each proposal is a distinct rollout, and the LM
            cache replays them on a rerun.
        :param confidence_z: how clearly a proposal must beat the original instruction to replace it:
            its net gain on the valset, in examples, must reach `confidence_z` standard deviations of
            the per-example differences (a paired sign test; 1.0 is about 84% one-sided). Guards against
            keeping a rewrite that won on a few lucky examples. 0: any strict gain.
        :param num_threads: examples scored at once (hosted LMs); None: ``hn.configure(num_threads=...)``.
        :param max_errors: failed examples tolerated per evaluation; the next raises TooManyErrors.
        """
        owner = type(self).__name__
        check_count(owner, "breadth", breadth, minimum=2)
        check_count(owner, "depth", depth, minimum=1)
        check_count(owner, "num_threads", num_threads, minimum=1, optional=True)
        check_count(owner, "max_errors", max_errors, optional=True)
        check_number(owner, "init_temperature", init_temperature)
        check_number(owner, "confidence_z", confidence_z)
        check_lm(owner, "prompt_model", prompt_model)
        super().__init__(metric, prompt_model=prompt_model, breadth=breadth, depth=depth,
                         init_temperature=init_temperature, seed=seed, confidence_z=float(confidence_z),
                         num_threads=num_threads, max_errors=max_errors, display_progress=display_progress)
        self.confidence_z = float(confidence_z)
        self.prompt_model = prompt_model
        self.breadth = breadth
        self.depth = depth
        self.init_temperature = float(init_temperature)
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.display_progress = display_progress

    def optimize(self, program: Module, *, trainset: list[Example], valset: list[Example] | None,
                 teacher: Module | None, run_dir: Any = None, resume: bool = False, **kwargs: Any) -> Module:
        reject_unknown(self.name, kwargs)
        prompt_lm = resolve_lm(self.name, "prompt_model", self.prompt_model)
        run_log = open_run_log(self, run_dir, resume)
        devset = selection_set(self, trainset, valset)
        search = _Search(self, program, devset, prompt_lm, run_log)
        with track_usage() as spent:
            try:
                search.run()
            except BudgetExceeded:
                if search.baseline is None:
                    raise
                search.budget_limited = True
                self.note(f"the budget ran out after {len(search.results)} scored candidates; returning the best "
                          "instructions found before that")
        return search.finish(run_log, spent.total)


class _Search:
    """The state of one SignatureOptimizer compile."""

    def __init__(self, optimizer: SignatureOptimizer, program: Module, devset: list[Example], prompt_lm: Any,
                 run_log: RunLog | None) -> None:
        self.opt = optimizer
        self.program = program
        self.prompt_lm = prompt_lm
        self.run_log = run_log
        self.evaluator = CandidateEvaluator(devset, optimizer.metric, num_threads=optimizer.num_threads or 1,
                                            max_errors=optimizer.max_errors,
                                            display_progress=optimizer.display_progress, run_log=run_log,
                                            event="attempt")
        self.tally = Tally()
        self.results: list[CandidateResult] = []
        self.entries: list[dict[str, Any]] = []
        self.scored: dict[str, CandidateResult] = {}
        self.baseline: CandidateResult | None = None
        self.current: CandidateResult | None = None
        self.budget_limited = False

    def score(self, key: str, candidate: Module, params: dict[str, Any]) -> tuple[CandidateResult, bool]:
        """Score a candidate program, or return the result of an identical state scored before."""
        fingerprint = _fingerprint(program_state(candidate))
        known = self.scored.get(fingerprint)
        if known is not None:
            return known, True
        result = self.evaluator.evaluate(key, candidate, params)
        self.scored[fingerprint] = result
        self.results.append(result)
        return result, False

    def run(self) -> None:
        opt = self.opt
        self.baseline, _ = self.score("baseline", self.program, {"kind": "baseline"})
        self.current = self.baseline
        self.entries.append({**self.baseline.summary(), "predictor": None, "depth": None, "instruction": None,
                             "origin": "student"})
        names = [n for n, _ in self.program.named_predictors()]
        total = len(names) * (opt.breadth + (opt.depth - 1) * opt.breadth)
        bar = progress(total, opt.name, opt.display_progress)
        try:
            for index, name in enumerate(names):
                self.optimize_predictor(index, name, bar)
        finally:
            bar.close()

    def optimize_predictor(self, index: int, name: str, bar: Any) -> None:
        opt = self.opt
        predictor = dict(self.program.named_predictors())[name]
        original = predictor.signature.instructions
        task = task_description(predictor)
        topic = topic_of(predictor)
        attempts: list[tuple[str, float, CandidateResult]] = []

        def evaluate(depth: int, slot: int, instruction: str, origin: str) -> None:
            candidate = self.program.deepcopy()
            apply_state(candidate, {name: {"instructions": instruction,
                                           "demos": dict(candidate.named_predictors())[name].demos}})
            key = f"{name}:d{depth}:{slot}"
            result, reused = self.score(key, candidate, {"predictor": name, "depth": depth, "slot": slot,
                                                         "instruction": instruction})
            attempts.append((instruction, result.score, result))
            self.entries.append({**result.summary(), "key": key, "predictor": name, "depth": depth,
                                 "instruction": instruction, "origin": origin, "reused": reused})
            bar.update(1)
            bar.set_postfix(best=f"{max(a[1] for a in attempts):.3f}")

        for depth in range(opt.depth):
            taken = [a[0] for a in attempts] or [original]
            if depth == 0:
                evaluate(0, 0, original, "original")
                signature, inputs, slots = ProposeVariation, {"task": task, "current_instruction": original}, \
                    range(1, opt.breadth)
            else:
                top = sorted(attempts, key=lambda a: -a[1])[:opt.breadth]
                signature, slots = ProposeFromAttempts, range(opt.breadth)
                inputs = {"task": task, "attempted_instructions": attempts_listing([(t, s) for t, s, _ in top])}
            for slot in slots:
                rollout = (index * opt.depth + depth) * (opt.breadth + 1) + slot
                text, tries = propose(signature, inputs, lm=self.prompt_lm, temperature=opt.init_temperature,
                                      rollout=rollout, attempts=PROPOSAL_ATTEMPTS,
                                      taken=[a[0] for a in attempts] or taken, tally=self.tally,
                                      context_keys=("task",), topic=topic)
                if self.run_log is not None:
                    self.run_log.event("proposal", predictor=name, depth=depth, slot=slot, instruction=text,
                                       tries=tries)
                if text is None:
                    bar.update(1)
                    continue
                evaluate(depth, slot, text, "proposal")
        # the best attempt that clearly beats the original; on a tie the earlier one; else the original
        reference = attempts[0][2]
        best_text, best_score, best_result = attempts[0]
        top = max(attempts, key=lambda a: a[1])
        for text, score, result in attempts[1:]:
            if score > best_score and clear_gain(result.example_scores, reference.example_scores,
                                                 opt.confidence_z):
                best_text, best_score, best_result = text, score, result
        apply_state(self.program, {name: {"instructions": best_text, "demos": predictor.demos}})
        self.current = best_result
        if best_text != original:
            self.opt.note(f"predictor {name!r}: new instruction scores {best_score:.3f} (original "
                          f"{reference.score:.3f}; {gain_text(best_result.example_scores, reference.example_scores)}"
                          f"): {best_text!r}")
        elif top[1] > reference.score:
            self.opt.note(f"predictor {name!r}: kept the original instruction ({reference.score:.3f}): the best "
                          f"proposal ({top[1]:.3f}, {gain_text(top[2].example_scores, reference.example_scores)}) "
                          f"did not beat it clearly (confidence_z={opt.confidence_z:g}): {top[0]!r}")
        else:
            self.opt.note(f"predictor {name!r}: no proposal beat the original instruction ({reference.score:.3f})")

    def finish(self, run_log: RunLog | None, spent: Any) -> Module:
        if self.tally.accepted or self.tally.rejected:
            self.opt.note(self.tally.describe())
        best = self.current
        if best is None:
            raise OptimizerError(f"{self.opt.name}: nothing was scored")
        scores = {e["key"]: round(e["score"], 6) for e in self.entries if not e.get("reused")}
        self.program.compile_record = OptimizerRecord(
            name=self.opt.name, score=best.score, scores=scores, candidates=tuple(jsonable(self.entries)),
            errors=sum(r.n_errors for r in self.results), budget_limited=self.budget_limited)
        if run_log is not None:
            run_log.finish(summary={"score": best.score, "baseline": self.baseline.score if self.baseline else None,
                                    "scored": len(self.results), "proposals": self.tally.to_dict(),
                                    "budget_limited": self.budget_limited, "calls": spent.calls,
                                    "prompt_tokens": spent.prompt_tokens,
                                    "completion_tokens": spent.completion_tokens, "cost": spent.cost},
                           points=[(e["key"], e["score"]) for e in self.entries if not e.get("reused")],
                           title=f"{self.opt.name}: {best.score:.3f} (student {self.baseline.score:.3f})"
                           if self.baseline else self.opt.name)
        return self.program
