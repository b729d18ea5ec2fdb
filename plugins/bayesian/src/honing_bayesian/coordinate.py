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
from typing import Any

import attrs
from honing.plugin_api import (
    BudgetExceeded,
    CandidateEvaluator,
    CandidateResult,
    CompileRun,
    Example,
    Module,
    Optimizer,
    OptimizerError,
    OptimizerRecord,
    apply_state,
    clear_gain,
    count,
    gain_text,
    json_safe,
    lm_or_none,
    number,
    program_state,
    progress,
    resolve_lm,
    setting,
    track_usage,
)

from honing_bayesian.bayesian_settings import ScoringSettings
from honing_bayesian.proposer import (
    PROPOSAL_ATTEMPTS,
    ProposeFromAttempts,
    ProposeVariation,
    attempts_listing,
    propose,
    task_description,
    topic_of,
)
from honing_bayesian.text import Tally


def _fingerprint(state: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(json_safe(state), sort_keys=True).encode()).hexdigest()[:16]


class SignatureOptimizer(Optimizer):
    """Coordinate ascent over instructions: a prompt model proposes rewrites, each scored on the valset."""

    requires_metric = True
    requires_labels = True

    @attrs.frozen
    class Settings(ScoringSettings):
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
        :param display_progress: a progress bar over the attempts, with one over examples inside it.
        """

        metric: Any = setting(None)
        prompt_model: Any = setting(None, check=lm_or_none)
        breadth: int = setting(10, check=count(minimum=2))
        depth: int = setting(3, check=count(minimum=1))
        init_temperature: float = setting(1.4, check=number())
        seed: int = setting(0)

    def optimize(self, program: Module, run: CompileRun) -> Module:
        prompt_lm = resolve_lm(self.name, "prompt_model", self.settings.prompt_model)
        ascent = CoordinateAscent(self.settings, run, program, run.selection_set(), prompt_lm)
        with track_usage() as spent:
            try:
                ascent.run_rounds()
            except BudgetExceeded:
                if ascent.baseline is None:
                    raise
                ascent.budget_limited = True
                run.note(f"the budget ran out after {len(ascent.results)} scored candidates; returning the "
                         "best instructions found before that")
        return ascent.finish(spent.total)


class CoordinateAscent:
    """The state of one SignatureOptimizer compile: every attempt scored, and the best so far."""

    def __init__(self, settings: SignatureOptimizer.Settings, run: CompileRun, program: Module,
                 devset: list[Example], prompt_lm: Any) -> None:
        self.settings = settings
        self.run = run
        self.program = program
        self.prompt_lm = prompt_lm
        self.evaluator = CandidateEvaluator(devset, settings.metric, num_threads=settings.num_threads or 1,
                                            max_errors=settings.max_errors,
                                            display_progress=settings.display_progress, run_log=run.log,
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

    def run_rounds(self) -> None:
        s = self.settings
        self.baseline, _ = self.score("baseline", self.program, {"kind": "baseline"})
        self.current = self.baseline
        self.entries.append({**self.baseline.summary(), "predictor": None, "depth": None, "instruction": None,
                             "origin": "student"})
        names = [n for n, _ in self.program.named_predictors()]
        total = len(names) * (s.breadth + (s.depth - 1) * s.breadth)
        bar = progress(total, self.run.optimizer, s.display_progress)
        try:
            for index, name in enumerate(names):
                self.optimize_predictor(index, name, bar)
        finally:
            bar.close()

    def optimize_predictor(self, index: int, name: str, bar: Any) -> None:
        s = self.settings
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

        for depth in range(s.depth):
            taken = [a[0] for a in attempts] or [original]
            if depth == 0:
                evaluate(0, 0, original, "original")
                signature, slots = ProposeVariation, range(1, s.breadth)
                inputs = {"task": task, "current_instruction": original}
            else:
                top = sorted(attempts, key=lambda a: -a[1])[:s.breadth]
                signature, slots = ProposeFromAttempts, range(s.breadth)
                listing = attempts_listing([(text, score) for text, score, _ in top])
                inputs = {"task": task, "attempted_instructions": listing}
            for slot in slots:
                rollout = (index * s.depth + depth) * (s.breadth + 1) + slot
                text, tries = propose(signature, inputs, lm=self.prompt_lm,
                                      temperature=float(s.init_temperature), rollout=rollout,
                                      attempts=PROPOSAL_ATTEMPTS,
                                      taken=[a[0] for a in attempts] or taken, tally=self.tally,
                                      context_keys=("task",), topic=topic)
                if self.run.log is not None:
                    self.run.log.event("proposal", predictor=name, depth=depth, slot=slot, instruction=text,
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
                                                 s.confidence_z):
                best_text, best_score, best_result = text, score, result
        apply_state(self.program, {name: {"instructions": best_text, "demos": predictor.demos}})
        self.current = best_result
        if best_text != original:
            gain = gain_text(best_result.example_scores, reference.example_scores)
            self.run.note(f"predictor {name!r}: new instruction scores {best_score:.3f} (original "
                          f"{reference.score:.3f}; {gain}): {best_text!r}")
        elif top[1] > reference.score:
            gain = gain_text(top[2].example_scores, reference.example_scores)
            self.run.note(f"predictor {name!r}: kept the original instruction ({reference.score:.3f}): the "
                          f"best proposal ({top[1]:.3f}, {gain}) did not beat it clearly "
                          f"(confidence_z={s.confidence_z:g}): {top[0]!r}")
        else:
            self.run.note(f"predictor {name!r}: no proposal beat the original instruction "
                          f"({reference.score:.3f})")

    def finish(self, spent: Any) -> Module:
        """The program with each predictor's best instruction, its record, and the run log's summary."""
        name = self.run.optimizer
        if self.tally.accepted or self.tally.rejected:
            self.run.note(self.tally.describe())
        best = self.current
        if best is None:
            raise OptimizerError(f"{name}: nothing was scored")
        scores = {e["key"]: round(e["score"], 6) for e in self.entries if not e.get("reused")}
        self.program.compile_record = OptimizerRecord(
            name=name, score=best.score, scores=scores, candidates=tuple(json_safe(self.entries)),
            errors=sum(r.n_errors for r in self.results), budget_limited=self.budget_limited)
        if self.run.log is not None:
            summary = {"score": best.score, "baseline": self.baseline.score if self.baseline else None,
                       "scored": len(self.results), "proposals": self.tally.to_dict(),
                       "budget_limited": self.budget_limited, "calls": spent.calls,
                       "prompt_tokens": spent.prompt_tokens, "completion_tokens": spent.completion_tokens,
                       "cost": spent.cost}
            self.run.log.finish(summary=summary,
                                points=[(e["key"], e["score"]) for e in self.entries if not e.get("reused")],
                                title=f"{name}: {best.score:.3f} (student {self.baseline.score:.3f})"
                                if self.baseline else name)
        return self.program
