"""Proposing instructions with a prompt model. The proposers are honing programs themselves.

`propose` runs one proposer program under ``hn.context(lm=prompt_model, sampling={"temperature": t,
"rollout": r})`` — every attempt gets its own rollout, so a repeated request is a fresh sample rather
than the cached text — and cleans the reply (`text.clean_proposal`). Unusable replies are retried a
bounded number of times; a slot that gets nothing usable falls back to the original instruction (the
slot is dropped: the original is always a candidate already).

The grounded proposer of `BayesianSignatureOptimizer` is given a summary of the dataset (written by the
prompt model from batches of training examples, with the dataset's statistics appended so that even a
weak summary grounds it), a description of the program and of the predictor's role (built from the
program's structure: no LM call), a few example demos, the current instruction and a tip.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import honing as hn
from honing.plugin_api import (
    BudgetExceeded,
    ChainOfThought,
    ConfigurationError,
    Example,
    Module,
    Predict,
    closed_values,
    render_value,
    type_hint,
)

from honing_bayesian.text import Tally, clean_proposal, tidy

log = logging.getLogger("honing.optimizers")

#: Tips, one drawn per proposal (seeded): they push proposals in different directions.
TIPS = (
    "Be concise: one or two short sentences.",
    "Think about edge cases and ambiguous inputs.",
    "Name exactly what the output must be.",
    "Describe the task the way an expert in this domain would.",
    "Say what to pay attention to in the input.",
    "Be specific about the format of the answer.",
)

#: Longest dataset summary kept (characters).
MAX_SUMMARY_CHARS = 600
#: Training examples per DescribeData call, and at most this many calls.
DATA_BATCH_SIZE = 10
MAX_DATA_BATCHES = 3
#: Example demos shown to the grounded proposer.
EXAMPLE_DEMOS = 3
#: Longest proposal generated (tokens).
PROPOSAL_MAX_TOKENS = 96
#: Proposal attempts per slot (the first plus retries after unusable replies).
PROPOSAL_ATTEMPTS = 3


class ProposeInstruction(hn.Signature):
    """You improve instructions for a language model. Read what the data looks like, what the program
    does, this step's role, the examples, the current instruction and the tip. Then write one new, better
    instruction for this step: one to three plain sentences addressed to the model."""

    dataset_summary: str = hn.InputField()
    program_description: str = hn.InputField()
    predictor_role: str = hn.InputField()
    example_demos: str = hn.InputField()
    current_instruction: str = hn.InputField()
    tip: str = hn.InputField()
    proposed_instruction: str = hn.OutputField()


class ProposeVariation(hn.Signature):
    """You improve instructions for a language model. Read the task and its current instruction, then
    write one new, better instruction for the task: one to three plain sentences addressed to the model."""

    task: str = hn.InputField()
    current_instruction: str = hn.InputField()
    proposed_instruction: str = hn.OutputField()


class ProposeFromAttempts(hn.Signature):
    """You improve instructions for a language model. Here are instructions already tried for a task,
    each with its score, from worst to best. Write one new instruction that should score higher than all
    of them: one to three plain sentences addressed to the model."""

    task: str = hn.InputField()
    attempted_instructions: str = hn.InputField()
    proposed_instruction: str = hn.OutputField()


class DescribeData(hn.Signature):
    """Here are examples from a dataset. Write two or three short observations about them: what the
    inputs are like, what the outputs are, and any pattern you see."""

    examples: str = hn.InputField()
    observations: str = hn.OutputField()


class SummarizeData(hn.Signature):
    """Summarize these observations about a dataset in one or two sentences."""

    observations: str = hn.InputField()
    summary: str = hn.OutputField()


# One worked example per proposer, from another task (film reviews): small models copy the form of a
# demo far better than they follow a description of it. A proposal that copies the demo is an echo.
_DEMO_TASK = "A step that reads `review`; writes `sentiment` (one of: positive, negative)."
_DEMO_ANSWER = ("Decide whether the reviewer liked the film: answer positive for praise and negative for "
                "complaints, paying attention to the words of judgement.")
PROPOSER_DEMOS: dict[str, dict[str, str]] = {
    "ProposeInstruction": {
        "dataset_summary": "Short opinions about films, half of them positive. 200 examples. Input `review`: "
                           "about 30 words. Output `sentiment`: 2 distinct values (positive, negative).",
        "program_description": "A program with 1 LM step (Predict). step 'self' reads `review`; writes "
                               "`sentiment` (one of: positive, negative).",
        "predictor_role": "Step 1 of 1 ('self') reads `review`; writes `sentiment` (one of: positive, negative).",
        "example_demos": "Review: a dull, overlong mess | Sentiment: negative\n"
                         "Review: warm, funny and beautifully acted | Sentiment: positive",
        "current_instruction": "Classify the sentiment of the review.",
        "tip": "Say what to pay attention to in the input.",
        "proposed_instruction": _DEMO_ANSWER,
    },
    "ProposeVariation": {"task": _DEMO_TASK, "current_instruction": "Classify the sentiment of the review.",
                         "proposed_instruction": _DEMO_ANSWER},
    "ProposeFromAttempts": {
        "task": _DEMO_TASK,
        "attempted_instructions": "Instruction #1: Classify the review. (score 0.55)\n"
                                  "Instruction #2: Classify the sentiment of the review. (score 0.70)",
        "proposed_instruction": _DEMO_ANSWER,
    },
}


def _predict(signature: type[hn.Signature]) -> Predict:
    predictor = Predict(signature, max_tokens=PROPOSAL_MAX_TOKENS)
    demo = PROPOSER_DEMOS.get(signature.__name__)
    if demo is not None:
        predictor.demos = [dict(demo)]
    return predictor


def _labels(signature: type[hn.Signature]) -> list[str]:
    return [f.prefix for f in signature.fields]


# ----------------------------------------------------------------------------------------------------
# describing the program and its predictors (from structure, no LM call)

def describe_fields(predictor: Predict) -> str:
    """``reads `text`; writes `intent` (one of: a, b)``."""
    sig = predictor.signature
    ins = ", ".join(f"`{f.name}`" for f in sig.input_fields)
    outs = []
    for f in sig.output_fields:
        hint = type_hint(f)
        outs.append(f"`{f.name}`" + (f" ({hint})" if hint else ""))
    return f"reads {ins}; writes {', '.join(outs)}"


def describe_program(program: Module) -> str:
    named = program.named_predictors()
    doc = ""
    if not isinstance(program, (Predict, ChainOfThought)):
        doc = " ".join((type(program).__doc__ or "").split())
    steps = "; ".join(f"step {name!r} {describe_fields(p)}" for name, p in named)
    head = f"A program with {len(named)} LM step{'s' if len(named) != 1 else ''}"
    return f"{head} ({type(program).__name__}{': ' + doc if doc else ''}). {steps}."


def describe_role(program: Module, name: str) -> str:
    named = program.named_predictors()
    index = [n for n, _ in named].index(name)
    predictor = named[index][1]
    return f"Step {index + 1} of {len(named)} ({name!r}) {describe_fields(predictor)}."


def render_demos(predictor: Predict, demos: Sequence[Mapping[str, Any]], limit: int = EXAMPLE_DEMOS) -> str:
    """Up to `limit` demos, one line each (``Text: ... | Intent: ...``)."""
    lines = []
    for demo in demos:
        parts = [f"{f.prefix}: {render_value(demo[f.name])}" for f in predictor.signature.fields if f.name in demo]
        if parts:
            lines.append(" | ".join(p.replace("\n", " ") for p in parts))
        if len(lines) >= limit:
            break
    return "\n".join(lines) if lines else "No examples available."


def task_description(predictor: Predict) -> str:
    return f"A step that {describe_fields(predictor)}."


def topic_of(predictor: Predict) -> str:
    """What a predictor's task is about: its instruction, field names and their descriptions and values."""
    sig = predictor.signature
    parts = [sig.instructions]
    for f in sig.fields:
        parts += [f.name.replace("_", " "), f.desc]
        parts += [render_value(v).replace("_", " ") for v in closed_values(f.annotation) or ()]
    return " ".join(parts)


# ----------------------------------------------------------------------------------------------------
# the dataset summary

def data_statistics(trainset: Sequence[Example]) -> str:
    """A summary nobody has to write: size, inputs and their length, and the labels' distribution."""
    if not trainset:
        return ""
    inputs = sorted(trainset[0].input_keys or ())
    labels = [k for k in trainset[0] if k not in inputs]
    parts = [f"{len(trainset)} examples."]
    for key in inputs:
        lengths = [len(str(e.get(key, "")).split()) for e in trainset]
        parts.append(f"Input `{key}`: about {round(sum(lengths) / len(lengths))} words.")
    for key in labels:
        values = Counter(render_value(e[key]) for e in trainset if key in e)
        if values and len(values) <= 0.5 * len(trainset):
            common = ", ".join(v for v, _ in values.most_common(12))
            parts.append(f"Output `{key}`: {len(values)} distinct values ({common}).")
        else:
            parts.append(f"Output `{key}`: free text.")
    return " ".join(parts)


def summarize_data(trainset: Sequence[Example], *, lm: Any, temperature: float, tally: Tally) -> str:
    """Observations on a few batches of training examples, summarized by the prompt model, then the
    statistics. A summary that is not usable text is left out (counted in `tally`)."""
    describe, summarize = _predict(DescribeData), _predict(SummarizeData)
    observations = []
    batches = [trainset[i:i + DATA_BATCH_SIZE] for i in range(0, len(trainset), DATA_BATCH_SIZE)][:MAX_DATA_BATCHES]
    for number, batch in enumerate(batches):
        shown = "\n".join(" | ".join(f"{k}: {render_value(v)}" for k, v in e.items()).replace("\n", " ")
                          for e in batch)
        text = _run(describe, {"examples": shown}, lm=lm, temperature=temperature, rollout=number,
                    field="observations", tally=None)
        text = tidy(text or "", stop_labels=_labels(DescribeData))
        if text:
            observations.append(text)
    summary = ""
    if observations:
        raw = _run(summarize, {"observations": " ".join(observations)[:2 * MAX_SUMMARY_CHARS]}, lm=lm,
                   temperature=temperature, rollout=0, field="summary", tally=None)
        topic = " ".join([data_statistics(trainset).replace("_", " "),
                          *(render_value(v) for e in trainset[:DATA_BATCH_SIZE * MAX_DATA_BATCHES] for v in e.values())])
        cleaned, reason = clean_proposal(raw, labels=_labels(SummarizeData) + _labels(DescribeData), topic=topic)
        if cleaned is None:
            tally.rejected[f"summary_{reason}"] += 1
        else:
            summary = cleaned[:MAX_SUMMARY_CHARS]
    stats = data_statistics(trainset)
    return f"{summary} {stats}".strip()


def _run(program: Predict, inputs: dict[str, Any], *, lm: Any, temperature: float, rollout: int, field: str,
         tally: Tally | None) -> str | None:
    """One proposer call; an LM or parse failure is counted (not fatal) and returns None."""
    try:
        with hn.context(lm=lm, sampling={"temperature": temperature, "rollout": rollout}):
            prediction = program(**inputs)
        return str(getattr(prediction, field) or "")
    except (BudgetExceeded, ConfigurationError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - a failed proposal is counted and retried
        log.info("proposer call failed: %s: %s", type(exc).__name__, exc)
        if tally is not None:
            tally.add("error")
        return None


# ----------------------------------------------------------------------------------------------------
# proposing

def propose(signature: type[hn.Signature], inputs: dict[str, Any], *, lm: Any, temperature: float,
            rollout: int, attempts: int, taken: Sequence[str], tally: Tally, context_keys: Sequence[str] = (),
            topic: str = "") -> tuple[str | None, list[dict[str, Any]]]:
    """One new instruction from the proposer `signature`, or None after `attempts` unusable replies.

    Attempt a uses rollout ``rollout * attempts + a + 1`` (distinct for every slot and attempt). `topic`
    is what the task is about (see `clean_proposal`). Returns the instruction and a log of every attempt
    (raw text and verdict) for the record.
    """
    program = _predict(signature)
    context = [str(inputs[k]) for k in context_keys] + [_DEMO_ANSWER]
    labels = _labels(signature)
    tries: list[dict[str, Any]] = []
    for attempt in range(attempts):
        raw = _run(program, inputs, lm=lm, temperature=temperature, rollout=rollout * attempts + attempt + 1,
                   field="proposed_instruction", tally=tally)
        if raw is None:
            tries.append({"raw": None, "verdict": "error"})
            continue
        text, verdict = clean_proposal(raw, context=context, labels=labels, taken=taken, topic=topic)
        tally.add(verdict)
        tries.append({"raw": raw[:500], "verdict": verdict})
        if text is not None:
            return text, tries
    tally.fallbacks += 1
    return None, tries


def grounded_inputs(*, dataset_summary: str, program: Module, name: str, demos: Sequence[Mapping[str, Any]],
                    tip: str) -> dict[str, Any]:
    predictor = dict(program.named_predictors())[name]
    return {
        "dataset_summary": dataset_summary or "No summary available.",
        "program_description": describe_program(program),
        "predictor_role": describe_role(program, name),
        "example_demos": render_demos(predictor, demos),
        "current_instruction": predictor.signature.instructions,
        "tip": tip,
    }


#: Inputs of the grounded proposer that a proposal must not simply copy.
GROUNDED_CONTEXT = ("dataset_summary", "program_description", "predictor_role", "example_demos", "tip")


def attempts_listing(attempts: Sequence[tuple[str, float]]) -> str:
    """Instructions with their scores, worst first (the best ends the prompt, nearest the answer)."""
    ordered = sorted(attempts, key=lambda a: a[1])
    return "\n".join(f"Instruction #{i + 1}: {text} (score {score:.2f})" for i, (text, score) in enumerate(ordered))
