"""The transcript adapter: a plain ``Field: value`` document completed by the model, for small local LMs.

Measured on SmolLM2-135M: this model follows inline demos in a plain transcript well and collapses when
the same demos are chat turns, so this is the local model's default. Layout::

    <instruction>

    Text: <demo 1 input>
    Intent: <demo 1 output>

    Text: <query>
    Intent:

Demos come before the query so consecutive calls share a long prefix (llama.cpp reuses its KV cache).
Outputs are produced one field at a time: closed types (Literal, enum, bool) are chosen by scoring each
allowed value's log-likelihood (optionally calibrated against content-free inputs), or decoded under a
grammar that admits only valid values; open types are decoded up to the next field.

Calibration (Zhao et al. 2021) subtracts from each value's score its mean score after several content-free
inputs (`CONTENT_FREE`): the model's prior for each value given the header and the demos. Averaging three
such inputs rather than taking one matters with many demos: measured on tuning rows no report uses
(`bench/scoring.py`, Banking77 intents outside the reported ten, 60 demos inline), one "N/A" scored 0.27
and the three 0.50.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from honing.adapters.base import Adapter, demo_fields, type_hint, usable_demos
from honing.adapters.parsing import closed_values, parse_value, render_value
from honing.lm.types import LMRequest
from honing.signatures import Field, Signature

#: The content-free inputs whose mean score per value is the model's prior (Zhao et al. 2021).
CONTENT_FREE: tuple[str, ...] = ("N/A", "", "[MASK]")


class TranscriptAdapter(Adapter):
    """Plain `Field: value` transcript with inline demos; choice scoring and grammars (small local LMs)."""

    name = "transcript"

    def __init__(self, *, list_choices: bool = True) -> None:
        #: Whether the header names the allowed values of closed fields (helps generation).
        self.list_choices = list_choices
        self._calibration: dict[tuple[int, str, tuple[str, ...]], tuple[Any, dict[str, float]]] = {}
        self._lock = threading.Lock()

    # -- prompt -------------------------------------------------------------------------------------
    def header(self, signature: type[Signature]) -> str:
        """The instruction, then one sentence per field that has a description or a value format."""
        lines = [signature.instructions.strip()]
        for f in signature.fields:
            if f.desc.strip():
                lines.append(f"{f.prefix} means: {f.desc.strip()}")
            hint = type_hint(f) if f.role == "output" else ""
            if hint and (self.list_choices or closed_values(f.annotation) is None):
                lines.append(f"{f.prefix} is {hint}.")
        return "\n".join(lines)

    def render_prompt(self, signature: type[Signature], demos: Sequence[Mapping[str, Any]],
                      inputs: Mapping[str, Any]) -> str:
        """Everything up to and including the first output's ``Prefix:``."""
        blocks = [self.header(signature)]
        for demo in usable_demos(signature, demos):
            blocks.append("\n".join(f"{f.prefix}: {text}" for f, text in demo_fields(signature, demo)))
        query = [f"{f.prefix}: {render_value(inputs[f.name])}" for f in signature.input_fields]
        query.append(f"{signature.output_fields[0].prefix}:")
        blocks.append("\n".join(query))
        return "\n\n".join(blocks)

    def format(self, signature: type[Signature], demos: Sequence[Mapping[str, Any]],
               inputs: Mapping[str, Any]) -> LMRequest:
        return LMRequest(prompt=self.render_prompt(signature, demos, inputs), stop=self._stops(signature))

    # -- run ----------------------------------------------------------------------------------------
    def run(self, lm: Any, signature: type[Signature], demos: Sequence[Mapping[str, Any]],
            inputs: Mapping[str, Any], *, decoding: str = "auto", temperature: float | None = None,
            max_tokens: int | None = None, rollout: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        prompt = self.render_prompt(signature, demos, inputs)
        outputs: dict[str, Any] = {}
        used: dict[str, str] = {}
        raw: dict[str, str] = {}
        fields = signature.output_fields
        for i, field in enumerate(fields):
            mode = effective_decoding(decoding, field, lm)
            used[field.name] = mode
            if mode in ("score", "calibrated"):
                text = self._choose(lm, signature, demos, inputs, outputs, prompt, field,
                                    calibrated=mode == "calibrated")
            else:
                text = self._decode(lm, signature, prompt, field, grammar=mode == "grammar",
                                    temperature=temperature, max_tokens=max_tokens, rollout=rollout)
            raw[field.name] = text
            outputs[field.name] = parse_value(text, field)
            if i + 1 < len(fields):
                prompt += f" {render_value(outputs[field.name])}\n{fields[i + 1].prefix}:"
        return outputs, {"adapter": self.name, "decoding": used, "raw": raw}

    def _stops(self, signature: type[Signature]) -> tuple[str, ...]:
        return ("\n\n", *(f"\n{f.prefix}:" for f in signature.fields))

    def _decode(self, lm: Any, signature: type[Signature], prompt: str, field: Field, *, grammar: bool,
                temperature: float | None, max_tokens: int | None, rollout: int | None = None) -> str:
        open_text = field.annotation is str
        request = LMRequest(
            prompt=prompt,
            stop=self._stops(signature) if open_text else ("\n",),
            grammar=_grammar_for(field) if grammar else None,
            temperature=temperature,
            max_tokens=max_tokens or (256 if open_text else 48),
            rollout=rollout,
        )
        return lm(request).text.strip()

    def _choose(self, lm: Any, signature: type[Signature], demos: Sequence[Mapping[str, Any]],
                inputs: Mapping[str, Any], outputs: Mapping[str, Any], prompt: str, field: Field, *,
                calibrated: bool) -> str:
        values = [render_value(v) for v in closed_values(field.annotation) or ()]
        scores = self._score(lm, prompt, values)
        if calibrated:
            baseline = self._content_free_scores(lm, signature, demos, inputs, outputs, field, values)
            scores = {v: scores[v] - baseline[v] for v in values}
        return max(values, key=lambda v: scores[v])

    def _score(self, lm: Any, prompt: str, values: list[str]) -> dict[str, float]:
        completion = lm(LMRequest(prompt=prompt, choices=[f" {v}" for v in values]))
        logprobs = completion.choice_logprobs or {}
        return {v: float(logprobs.get(f" {v}", logprobs.get(v, float("-inf")))) for v in values}

    def _content_free_scores(self, lm: Any, signature: type[Signature], demos: Sequence[Mapping[str, Any]],
                             inputs: Mapping[str, Any], outputs: Mapping[str, Any], field: Field,
                             values: list[str]) -> dict[str, float]:
        """Each value's mean log-likelihood over the content-free inputs (every input field set to each of
        `CONTENT_FREE` in turn): the model's prior bias, subtracted."""
        per_input = []
        for text in CONTENT_FREE:
            blank = {f.name: text for f in signature.input_fields}
            prompt = self.render_prompt(signature, demos, blank)
            for i, f in enumerate(signature.output_fields):
                if f.name == field.name:
                    break
                nxt = signature.output_fields[i + 1]
                prompt += f" {render_value(outputs[f.name])}\n{nxt.prefix}:"
            per_input.append(self._prior(lm, prompt, values))
        return {v: sum(scores[v] for scores in per_input) / len(per_input) for v in values}

    def _prior(self, lm: Any, prompt: str, values: list[str]) -> dict[str, float]:
        """`_score` of one content-free prompt, memoised: it recurs for every query of a candidate. The
        entry keeps its LM object, so an LM that happens to reuse a freed one's id never gets its scores."""
        key = (id(lm), prompt, tuple(values))
        with self._lock:
            entry = self._calibration.get(key)
        if entry is not None and entry[0] is lm:
            return entry[1]
        scores = self._score(lm, prompt, values)
        with self._lock:
            if len(self._calibration) > 256:
                self._calibration.clear()
            self._calibration[key] = (lm, scores)
        return scores


def effective_decoding(requested: str, field: Field, lm: Any) -> str:
    """What decoding a field actually gets on this LM (recorded in the prediction's meta)."""
    closed = closed_values(field.annotation) is not None
    can_score = bool(getattr(lm, "supports_choice_scoring", False))
    can_grammar = bool(getattr(lm, "supports_grammar", False))
    if field.annotation is str:
        return "generate"
    if requested == "auto":
        requested = "calibrated" if closed and can_score else "grammar"
    if requested in ("score", "calibrated") and not (closed and can_score):
        requested = "grammar"
    if requested == "grammar" and not can_grammar:
        requested = "generate"
    return requested


def _grammar_for(field: Field) -> str:
    from honing.adapters.grammar import value_grammar

    return value_grammar(field.annotation)
