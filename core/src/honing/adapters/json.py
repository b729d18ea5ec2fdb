"""The JSON adapter: the reply is one JSON object with the output fields as keys.

Where litellm says the provider supports JSON-schema structured output, the request carries the
signature's schema as `response_format`, so the provider itself enforces the shape.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from honing.adapters.base import Adapter, usable_demos
from honing.adapters.chat import describe_fields
from honing.adapters.parsing import closed_values, parse_value, render_value
from honing.errors import ParseError
from honing.jsontext import first_json
from honing.lm.types import LMRequest
from honing.signatures import Signature, is_optional


def json_schema(annotation: Any) -> dict[str, Any]:
    """The JSON schema of a supported type."""
    optional, inner = is_optional(annotation)
    choices = closed_values(inner)
    if inner is bool:
        schema: dict[str, Any] = {"type": "boolean"}
    elif choices is not None:
        schema = {"type": "string", "enum": [render_value(c) for c in choices]}
        if typing.get_origin(inner) is Literal and all(isinstance(c, int) for c in choices):
            schema = {"type": "integer", "enum": choices}
    elif inner is str:
        schema = {"type": "string"}
    elif inner is int:
        schema = {"type": "integer"}
    elif inner is float:
        schema = {"type": "number"}
    elif typing.get_origin(inner) is list:
        schema = {"type": "array", "items": json_schema(typing.get_args(inner)[0])}
    else:
        schema = {"type": "object", "additionalProperties": json_schema(typing.get_args(inner)[1])}
    return {"anyOf": [schema, {"type": "null"}]} if optional else schema


def signature_schema(signature: type[Signature]) -> dict[str, Any]:
    fields = signature.output_fields
    return {"type": "object", "properties": {f.name: json_schema(f.annotation) for f in fields},
            "required": [f.name for f in fields], "additionalProperties": False}


class JSONAdapter(Adapter):
    """A JSON object reply, with the provider's JSON-schema structured output where supported."""

    name = "json"

    def format(self, signature: type[Signature], demos: Sequence[Mapping[str, Any]],
               inputs: Mapping[str, Any], *, structured: bool = False) -> LMRequest:
        keys = ", ".join(f'"{f.name}"' for f in signature.output_fields)
        system = (f"{signature.instructions.strip()}\n\n{describe_fields(signature)}\n\n"
                  f"Reply with one JSON object with the keys {keys} and nothing else.")
        messages = [{"role": "system", "content": system}]
        names_in = [f.name for f in signature.input_fields]
        names_out = [f.name for f in signature.output_fields]
        for demo in usable_demos(signature, demos):
            messages.append({"role": "user", "content": json.dumps({k: demo[k] for k in names_in if k in demo},
                                                                   ensure_ascii=False, default=render_value)})
            messages.append({"role": "assistant", "content": json.dumps(
                {k: demo[k] for k in names_out if k in demo}, ensure_ascii=False, default=render_value)})
        messages.append({"role": "user", "content": json.dumps({k: inputs[k] for k in names_in},
                                                               ensure_ascii=False, default=render_value)})
        response_format: dict[str, Any] = {"type": "json_object"}
        if structured:
            response_format = {"type": "json_schema", "json_schema": {
                "name": signature.__name__, "schema": signature_schema(signature), "strict": True}}
        return LMRequest(messages=messages, response_format=response_format)

    def parse(self, signature: type[Signature], text: str) -> dict[str, Any]:
        try:
            data = json.loads(first_json(text))
        except json.JSONDecodeError as exc:
            if len(signature.output_fields) == 1 and "{" not in text:  # a bare value for the only output
                return {signature.output_fields[0].name: parse_value(text, signature.output_fields[0])}
            raise ParseError(f"reply is not a JSON object ({exc.msg}); raw text: {text!r:.200}", raw=text) from None
        if not isinstance(data, dict):
            if len(signature.output_fields) == 1:
                f = signature.output_fields[0]
                return {f.name: parse_value(data if isinstance(data, str) else json.dumps(data), f)}
            raise ParseError(f"reply is JSON but not an object; raw text: {text!r:.200}", raw=text)
        outputs = {}
        for f in signature.output_fields:
            if f.name not in data:
                raise ParseError(f"reply has no key {f.name!r} (expected {f.type_name}); raw text: {text!r:.200}",
                                 field=f.name, expected=f.type_name, raw=text)
            value = data[f.name]
            outputs[f.name] = parse_value(value if isinstance(value, str) else json.dumps(value), f)
        return outputs

    def run(self, lm: Any, signature: type[Signature], demos: Sequence[Mapping[str, Any]],
            inputs: Mapping[str, Any], *, decoding: str = "auto", temperature: float | None = None,
            max_tokens: int | None = None, rollout: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        import attrs

        structured = bool(getattr(lm, "supports_response_schema", False))
        request = attrs.evolve(self.format(signature, demos, inputs, structured=structured),
                               temperature=temperature, max_tokens=max_tokens, rollout=rollout)
        completion = lm(request)
        return self.parse(signature, completion.text), {"adapter": self.name, "decoding": "generate",
                                                        "raw": completion.text}
