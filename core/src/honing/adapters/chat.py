"""The chat adapter: for capable chat models. Fields travel between tags, ``<intent>...</intent>``.

The system message states the task, the fields and the reply format; demos are user/assistant turns;
the reply is parsed tag by tag. A reply that is only the bare value is accepted when there is a single
output field (capable models sometimes drop the tags).
"""

from __future__ import annotations

import re

import attrs
from collections.abc import Mapping, Sequence
from typing import Any

from honing.adapters.base import Adapter, demo_fields, type_hint, usable_demos
from honing.adapters.parsing import parse_value, render_value
from honing.errors import ParseError
from honing.lm.types import LMRequest
from honing.signatures import Signature


def describe_fields(signature: type[Signature]) -> str:
    """The field list of a system message: name, what it holds, and its value format."""
    lines = []
    for title, fields in (("Inputs", signature.input_fields), ("Outputs", signature.output_fields)):
        lines.append(f"{title}:")
        for f in fields:
            notes = "; ".join(p for p in (f.desc.strip(), type_hint(f)) if p)
            lines.append(f"- {f.name}" + (f": {notes}" if notes else ""))
    return "\n".join(lines)


class ChatAdapter(Adapter):
    """Chat messages, demos as turns, fields between tags (capable chat models)."""

    name = "chat"

    def system_message(self, signature: type[Signature]) -> str:
        skeleton = "\n".join(f"<{f.name}>...</{f.name}>" for f in signature.output_fields)
        return (f"{signature.instructions.strip()}\n\n{describe_fields(signature)}\n\n"
                f"Reply with every output field inside its tags, in this order, and nothing else:\n{skeleton}")

    def user_message(self, signature: type[Signature], values: Mapping[str, Any]) -> str:
        return "\n".join(f"<{f.name}>{render_value(values[f.name])}</{f.name}>"
                         for f in signature.input_fields if f.name in values)

    def format(self, signature: type[Signature], demos: Sequence[Mapping[str, Any]],
               inputs: Mapping[str, Any]) -> LMRequest:
        messages = [{"role": "system", "content": self.system_message(signature)}]
        for demo in usable_demos(signature, demos):
            rendered = dict(demo_fields(signature, demo))
            messages.append({"role": "user", "content": "\n".join(
                f"<{f.name}>{text}</{f.name}>" for f, text in rendered.items() if f.role == "input")})
            messages.append({"role": "assistant", "content": "\n".join(
                f"<{f.name}>{text}</{f.name}>" for f, text in rendered.items() if f.role == "output")})
        messages.append({"role": "user", "content": self.user_message(signature, inputs)})
        return LMRequest(messages=messages)

    def parse(self, signature: type[Signature], text: str) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        fields = signature.output_fields
        for f in fields:
            m = re.search(rf"<{f.name}>(.*?)(?:</{f.name}>|(?=<\w+>)|\Z)", text, re.DOTALL)
            if m is None:
                if len(fields) == 1 and not re.search(r"</?[A-Za-z_]\w*>", text):  # a bare value, no tags
                    return {f.name: parse_value(text, f)}
                raise ParseError(f"reply has no <{f.name}> field (expected {f.type_name}); raw text: {text!r:.200}",
                                 field=f.name, expected=f.type_name, raw=text)
            outputs[f.name] = parse_value(m.group(1), f)
        return outputs

    def run(self, lm: Any, signature: type[Signature], demos: Sequence[Mapping[str, Any]],
            inputs: Mapping[str, Any], *, decoding: str = "auto", temperature: float | None = None,
            max_tokens: int | None = None, rollout: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        request = self.format(signature, demos, inputs)
        request = attrs.evolve(request, temperature=temperature, max_tokens=max_tokens, rollout=rollout)
        completion = lm(request)
        return self.parse(signature, completion.text), {"adapter": self.name, "decoding": "generate",
                                                        "raw": completion.text}
