"""The adapter contract: (signature, demos, inputs) → LM request(s) → typed outputs.

`format` returns the request an adapter sends first (what `honing export` shows); `run` does the whole
exchange, which for the transcript adapter may be one request per output field (each reusing the
previous prompt as its prefix, so the local model's KV cache makes the extra requests cheap).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from honing.adapters.parsing import render_value
from honing.lm.types import LMRequest
from honing.signatures import Field, Signature


class Adapter:
    """Base class. Subclasses set `name` and implement `format` and `run`."""

    name = "base"

    def format(self, signature: type[Signature], demos: Sequence[Mapping[str, Any]],
               inputs: Mapping[str, Any]) -> LMRequest:
        raise NotImplementedError

    def run(self, lm: Any, signature: type[Signature], demos: Sequence[Mapping[str, Any]],
            inputs: Mapping[str, Any], *, decoding: str = "auto", temperature: float | None = None,
            max_tokens: int | None = None, rollout: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Call `lm` and return (outputs by field name, meta about how they were produced)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def demo_fields(signature: type[Signature], demo: Mapping[str, Any]) -> list[tuple[Field, str]]:
    """The signature's fields that a demo has a value for, rendered, in signature order.

    Keys starting with "_" are bookkeeping (where a demo came from) and never reach a prompt.
    """
    return [(f, render_value(demo[f.name])) for f in signature.fields if f.name in demo]


def usable_demos(signature: type[Signature], demos: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Demos with at least one input and one output of this signature (others teach nothing)."""
    names_in = {f.name for f in signature.input_fields}
    names_out = {f.name for f in signature.output_fields}
    return [d for d in demos if names_in & set(d) and names_out & set(d)]


def type_hint(field: Field) -> str:
    """A short human description of what a field's value must look like."""
    from honing.adapters.parsing import closed_values

    choices = closed_values(field.annotation)
    if choices is not None:
        return "one of: " + ", ".join(render_value(c) for c in choices)
    return {"str": "", "int": "an integer", "float": "a number", "bool": "True or False"}.get(
        field.type_name, f"a value of type {field.type_name} (JSON)")
