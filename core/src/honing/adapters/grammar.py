"""Python types -> llama.cpp GBNF grammars for one output value, as the transcript adapter renders it.

`value_grammar(annotation)` returns a complete grammar (with a ``root`` rule) that admits exactly the
text of one value of that type as it appears after ``"Field:"`` in a transcript (by default preceded by
an optional single space, see `value_grammar`):

=========================  ===================================================================
``str``                    one non-empty line that does not start with whitespace
``int``                    ``-?(0|[1-9][0-9]*)``
``float``                  a decimal number: ``-1``, ``0.5``, ``2.5e-3`` (``int`` forms included)
``bool``                   ``True`` or ``False``
``Literal["a", "b"]``      exactly those texts (``str()`` of non-string literals, ``None`` for None)
``enum.Enum`` subclass     ``str(member.value)`` of each member
``list[X]`` / ``tuple``    a one-line JSON array of X rendered as JSON (``["a", "b"]``, ``[1, 2]``)
``dict[str, X]``, ``dict`` a one-line JSON object
``Optional[X]``            X or ``None``; other unions: any of their members
=========================  ===================================================================

Inside JSON (list items, dict values) ``str`` is a JSON string, ``bool`` is ``true``/``false``, None is
``null``, Literal/enum values are JSON-encoded, and bare ``list``/``dict``/``Any`` are any JSON value.

`closed_choices(annotation)` gives the finite list of value texts of a closed type (Literal, enum, bool,
and Optional/unions of those), or None for an open type; the adapter scores those instead of decoding.

Unsupported annotations raise `honing.errors.SignatureError`.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from typing import Any

from honing.errors import SignatureError

__all__ = ["closed_choices", "gbnf_literal", "value_grammar"]

_NONE_TEXT = "None"

# Shared JSON rules (adapted from llama.cpp's grammars/json.gbnf), kept on one line: `ws` is at most one
# space, so a constrained model cannot pad a value with runs of whitespace or newlines.
_JSON_RULES = {
    "ws": '" "?',
    "json-string": r'"\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""',
    "json-int": '"-"? ( "0" | [1-9] [0-9]* )',
    "json-number": 'json-int ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?',
    "json-bool": '"true" | "false"',
    "json-null": '"null"',
    "json-value": "json-object | json-array | json-string | json-number | json-bool | json-null",
    "json-array": '"[" ws ( json-value ( ws "," ws json-value )* )? ws "]"',
    "json-object": '"{" ws ( json-string ws ":" ws json-value ( ws "," ws json-string ws ":" ws json-value )* )? ws "}"',
}
_JSON_DEPS = {
    "json-number": ("json-int",),
    "json-value": ("json-object", "json-array", "json-string", "json-number", "json-bool", "json-null"),
    "json-array": ("ws", "json-value"),
    "json-object": ("ws", "json-string", "json-value"),
}


def gbnf_literal(text: str) -> str:
    """`text` as a GBNF string literal (quotes, backslashes and control characters escaped)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02X}")
        else:
            out.append(ch)  # non-ASCII text is written as UTF-8, which llama.cpp's parser reads
    out.append('"')
    return "".join(out)


def _alternatives(texts: list[str]) -> str:
    unique = list(dict.fromkeys(texts))
    if any(t == "" for t in unique):
        raise SignatureError("a closed set of values cannot contain the empty string")
    return " | ".join(gbnf_literal(t) for t in unique)


def _is_enum(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, enum.Enum)


def _union_args(annotation: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        return typing.get_args(annotation)
    return None


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _literal_text(value: Any) -> str:
    """How a literal/enum value is written in a transcript."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return _NONE_TEXT
    return str(value)


def _json_text(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    return json.dumps(value, ensure_ascii=False)


def _describe(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)


def closed_choices(annotation: Any) -> list[str] | None:
    """The value texts of a closed type (Literal, Enum, bool, and unions/Optional of them), else None.

    The texts are exactly what `value_grammar` admits for that type, in declaration order.
    """
    annotation = _strip_annotated(annotation)
    if annotation is bool:
        return ["True", "False"]
    if annotation is type(None) or annotation is None:
        return [_NONE_TEXT]
    if _is_enum(annotation):
        return list(dict.fromkeys(_literal_text(m) for m in annotation))
    if typing.get_origin(annotation) is typing.Literal:
        return list(dict.fromkeys(_literal_text(v) for v in typing.get_args(annotation)))
    args = _union_args(annotation)
    if args is not None:
        texts: list[str] = []
        for arg in args:
            sub = closed_choices(arg)
            if sub is None:
                return None
            texts.extend(sub)
        return list(dict.fromkeys(texts))
    return None


class _Builder:
    """Collects named rules while turning a type into a GBNF expression."""

    def __init__(self) -> None:
        self.rules: dict[str, str] = {}

    def use_json(self, name: str) -> str:
        if name not in self.rules:
            self.rules[name] = _JSON_RULES[name]
            for dep in _JSON_DEPS.get(name, ()):
                self.use_json(dep)
        return name

    def add(self, base: str, body: str) -> str:
        """Add a rule named after `base` (deduplicated by body) and return its name."""
        for name, existing in self.rules.items():
            if existing == body and name.startswith(base):
                return name
        name, i = base, 1
        while name in self.rules:
            i += 1
            name = f"{base}{i}"
        self.rules[name] = body
        return name

    # -- top-level values (transcript text) ---------------------------------------------------------

    def value(self, annotation: Any) -> str:
        annotation = _strip_annotated(annotation)
        if annotation is Any or annotation is object:
            raise SignatureError(f"cannot build a grammar for an output of type {_describe(annotation)}")
        choices = closed_choices(annotation)
        if choices is not None:
            return self.add("choice", _alternatives(choices))
        args = _union_args(annotation)
        if args is not None:
            return self.add("union", " | ".join(self.value(a) for a in args))
        if annotation is str:
            return self.add("line", r"[^\r\n \t] [^\r\n]*")
        if annotation is int:
            return self.use_json("json-int")
        if annotation is float:
            return self.use_json("json-number")
        return self.json(annotation)

    # -- JSON values (inside lists and dicts; also top-level lists and dicts) -----------------------

    def json(self, annotation: Any) -> str:
        annotation = _strip_annotated(annotation)
        origin = typing.get_origin(annotation)
        if annotation is Any or annotation is object:
            return self.use_json("json-value")
        if annotation is str:
            return self.use_json("json-string")
        if annotation is bool:
            return self.use_json("json-bool")
        if annotation is int:
            return self.use_json("json-int")
        if annotation is float:
            return self.use_json("json-number")
        if annotation is type(None) or annotation is None:
            return self.use_json("json-null")
        if _is_enum(annotation):
            return self.add("enum", _alternatives([_json_text(m) for m in annotation]))
        if origin is typing.Literal:
            return self.add("literal", _alternatives([_json_text(v) for v in typing.get_args(annotation)]))
        args = _union_args(annotation)
        if args is not None:
            return self.add("union", " | ".join(self.json(a) for a in args))
        if annotation in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset):
            item_args = typing.get_args(annotation)
            if origin is tuple and len(item_args) == 2 and item_args[1] is Ellipsis:
                item_args = item_args[:1]
            elif origin is tuple and item_args:
                items = ' ws "," ws '.join(self.json(a) for a in item_args)
                self.use_json("ws")
                return self.add("tuple", f'"[" ws {items} ws "]"')
            if not item_args:
                return self.use_json("json-array")
            item = self.json(item_args[0])
            self.use_json("ws")
            return self.add("list", f'"[" ws ( {item} ( ws "," ws {item} )* )? ws "]"')
        if annotation is dict or origin is dict:
            kv_args = typing.get_args(annotation)
            if not kv_args:
                return self.use_json("json-object")
            if kv_args[0] is not str:
                raise SignatureError(
                    f"cannot build a grammar for {_describe(annotation)}: JSON object keys must be str"
                )
            val = self.json(kv_args[1])
            key = self.use_json("json-string")
            self.use_json("ws")
            pair = f'{key} ws ":" ws {val}'
            return self.add("object", f'"{{" ws ( {pair} ( ws "," ws {pair} )* )? ws "}}"')
        raise SignatureError(f"cannot build a grammar for an output of type {_describe(annotation)}")


def value_grammar(annotation: Any, *, leading_space: bool | None = None, newline: bool = True) -> str:
    """A complete GBNF grammar (``root ::= ...``) for one value of `annotation`, as written after a
    field label.

    `leading_space` says whether the value is preceded by one space:

    - None (default): an optional single space, so the grammar fits a prompt ending with ``"Field:"``
      (the model writes ``" positive"``) as well as one ending with ``"Field: "``. Callers strip the text.
    - True: exactly one space, then the value (for a prompt ending with ``"Field:"``).
    - False: the value alone (for a prompt ending with ``"Field: "``).

    BPE tokenizers write the space together with the next word (``" positive"`` is one token), so
    forbidding it after ``"Field:"`` pushes the model off its preferred tokens: on a 6-query few-shot
    intent test SmolLM2-135M got 3/6 right without the space and 5/6 with it.

    With `newline` (default) the value may be followed by one ``"\\n"``, after which the grammar is
    complete: in a transcript a value ends with a newline, and a model that wants to end the line must be
    allowed to (a grammar that only allows the end-of-text token there makes a small model keep going,
    e.g. ``" 18"`` becomes ``" 18000000000..."``). Pass ``"\\n"`` as a stop sequence, or strip the text.

    Raises `SignatureError` for types it cannot express (see the module doc for the supported ones).
    """
    builder = _Builder()
    root = builder.value(annotation)
    prefix = {None: '" "? ', True: '" " ', False: ""}[leading_space]
    suffix = ' "\\n"?' if newline else ""
    lines = [f"root ::= {prefix}{root}{suffix}"]
    lines.extend(f"{name} ::= {body}" for name, body in builder.rules.items())
    return "\n".join(lines) + "\n"
