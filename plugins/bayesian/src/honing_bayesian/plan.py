"""What a BayesianSignatureOptimizer compile will spend, computed before it spends anything.

The figures are upper bounds before the LM cache (a repeated request is free) and before early stops:
a bootstrap pass stops once it has its demos, and proposals that are usable at the first attempt need
no retry. Tokens are estimated from the data (about four characters a token); the cost is litellm's
price for the model (`litellm.cost_per_token`), 0 for the local model, and unknown for a model litellm
has no price for.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
from honing.plugin_api import LM, Example, Module, import_litellm, known_providers

#: Characters per token, for estimates.
CHARS_PER_TOKEN = 4


@attrs.frozen
class Plan:
    """The predicted spend of one compile (see the module docstring)."""

    predictors: int
    train: int
    val: int
    demo_sets: int
    instruction_candidates: int
    num_trials: int
    minibatch_size: int | None
    full_evals: int
    bootstrap_calls: int
    summary_calls: int
    proposal_calls: tuple[int, int]
    eval_calls: int
    task_tokens: int
    prompt_tokens: int
    task_model: str
    prompt_model: str
    task_cost: float | None
    prompt_cost: float | None

    @property
    def calls(self) -> tuple[int, int]:
        """(expected, at most) LM calls."""
        task = self.bootstrap_calls + self.eval_calls
        return task + self.summary_calls + self.proposal_calls[0], task + self.summary_calls + self.proposal_calls[1]

    @property
    def tokens(self) -> int:
        return self.task_tokens + self.prompt_tokens

    @property
    def cost(self) -> float | None:
        if self.task_cost is None or self.prompt_cost is None:
            return None
        return self.task_cost + self.prompt_cost

    def to_dict(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "calls": list(self.calls), "tokens": self.tokens, "cost": self.cost}

    def describe(self) -> str:
        low, high = self.calls
        evaluation = (f"{self.num_trials} trials on minibatches of {self.minibatch_size} + {self.full_evals} full "
                      f"evaluations of {self.val}" if self.minibatch_size else
                      f"{self.num_trials} trials + the baseline, each on all {self.val} validation examples")
        cost = "unknown (no price for this model in litellm)" if self.cost is None else f"${self.cost:.4f}"
        return "\n".join([
            (f"plan: {self.predictors} predictor(s), {self.instruction_candidates} instruction candidates x "
             f"{self.demo_sets} demo sets each; {evaluation}"),
            (f"  task model {self.task_model}: <= {self.bootstrap_calls} bootstrap calls + <= {self.eval_calls} "
             f"evaluation calls, ~{self.task_tokens:,} tokens"),
            (f"  prompt model {self.prompt_model}: {self.summary_calls} data-summary calls + "
             f"{self.proposal_calls[0]}-{self.proposal_calls[1]} proposal calls, ~{self.prompt_tokens:,} tokens"),
            f"  total: {low}-{high} LM calls before caching, ~{self.tokens:,} tokens, cost {cost}",
        ])


def _chars(examples: list[Example], keys: list[str] | None = None) -> float:
    if not examples:
        return 0.0
    total = 0
    for e in examples:
        total += sum(len(str(e[k])) + len(k) + 3 for k in (keys if keys is not None else list(e)) if k in e)
    return total / len(examples)


def price(lm: Any, prompt_tokens: int, completion_tokens: int) -> float | None:
    """litellm's price of these tokens on `lm`: 0 for the local model, None when it has no price."""
    if getattr(lm, "is_local", False):
        return 0.0
    model = getattr(lm, "model", None)
    if not isinstance(model, str):
        return None
    if model.startswith("local/"):
        return 0.0
    if not isinstance(lm, LM):  # a test double or a custom callable: no price known
        return None
    if model.split("/", 1)[0] not in known_providers():
        return None
    try:
        prompt_cost, completion_cost = import_litellm().cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        return float(prompt_cost) + float(completion_cost)
    except Exception:  # noqa: BLE001 - litellm raises for models it has no price for
        return None


def make_plan(program: Module, trainset: list[Example], valset: list[Example], *, demo_sets: int,
              instruction_candidates: int, num_trials: int, minibatch_size: int | None, full_eval_steps: int,
              max_demos: int, bootstrap_passes: int, summary_calls: int, proposal_attempts: int,
              proposal_max_tokens: int, task_lm: Any, prompt_lm: Any) -> Plan:
    predictors = program.named_predictors()
    p = len(predictors)
    inputs = sorted(trainset[0].input_keys or ()) if trainset else []
    example_chars = _chars(trainset)
    input_chars = _chars(trainset, inputs)
    instruction_chars = max((len(pr.signature.instructions) for _, pr in predictors), default=0)
    # one task call: instruction, demos, the query; a short answer
    task_prompt = int((instruction_chars + max_demos * example_chars + input_chars) / CHARS_PER_TOKEN) + 20
    task_completion = 8
    val = len(valset)
    if minibatch_size:
        full_evals = 1 + math.ceil(num_trials / max(full_eval_steps, 1))
        evaluations = num_trials * minibatch_size + full_evals * val
    else:
        full_evals = 1 + num_trials
        evaluations = full_evals * val
    eval_calls = evaluations * p
    bootstrap_calls = bootstrap_passes * len(trainset) * p
    slots = max(instruction_candidates - 1, 0) * p
    proposal_calls = (slots, slots * proposal_attempts)
    task_tokens = (eval_calls + bootstrap_calls) * (task_prompt + task_completion)
    summary_prompt = int(10 * example_chars / CHARS_PER_TOKEN) + 60
    proposal_prompt = int((600 + 3 * example_chars) / CHARS_PER_TOKEN) + 80
    prompt_tokens = summary_calls * (summary_prompt + proposal_max_tokens) + \
        proposal_calls[0] * (proposal_prompt + proposal_max_tokens)
    task_cost = price(task_lm, (eval_calls + bootstrap_calls) * task_prompt, (eval_calls + bootstrap_calls) * task_completion)
    prompt_cost = price(prompt_lm, summary_calls * summary_prompt + proposal_calls[0] * proposal_prompt,
                        (summary_calls + proposal_calls[0]) * proposal_max_tokens)
    return Plan(p, len(trainset), val, demo_sets, instruction_candidates, num_trials, minibatch_size, full_evals,
                bootstrap_calls, summary_calls, proposal_calls, eval_calls, task_tokens, prompt_tokens,
                _name(task_lm), _name(prompt_lm), task_cost, prompt_cost)


def _name(lm: Any) -> str:
    return str(getattr(lm, "model", None) or type(lm).__name__)
