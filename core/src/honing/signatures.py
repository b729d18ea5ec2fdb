"""Signatures: the typed input and output fields of one LM call, plus its instruction.

A signature is a class (``class Classify(hn.Signature): ...``) or a string (``"a: int, b: int -> sum: int"``).
Either way the result is an immutable class: `with_instructions` and friends return a new signature
instead of changing the old one, so a program copied by an optimizer never shares edits with its source.
"""

from __future__ import annotations

import ast
import enum
import re
import types
import typing
from typing import Any, Literal

import attrs

from honing.errors import InputError, SignatureError

INPUT = "input"
OUTPUT = "output"


@attrs.frozen
class Field:
    """One field of a signature: its name, role, Python type and description."""

    name: str
    role: str = attrs.field(validator=attrs.validators.in_((INPUT, OUTPUT)))
    annotation: Any = str
    desc: str = ""
    prefix: str = ""

    def __attrs_post_init__(self) -> None:
        if not self.name.isidentifier() or self.name.startswith("_"):
            raise SignatureError(f"field name {self.name!r} must be a Python identifier not starting with '_'")
        if not self.prefix:
            object.__setattr__(self, "prefix", default_prefix(self.name))

    @property
    def type_name(self) -> str:
        return type_to_str(self.annotation)


def default_prefix(name: str) -> str:
    """`card_number` → "Card Number": how a field is labelled in prompts."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name).replace("_", " ").split()
    return " ".join(w if w.isupper() else w.capitalize() for w in words)


@attrs.frozen
class _FieldMarker:
    role: str
    desc: str = ""
    prefix: str = ""


def InputField(*, desc: str = "", prefix: str = "") -> Any:  # noqa: N802 - reads like a type
    """Mark a signature attribute as an input: ``text: str = hn.InputField(desc="...")``."""
    return _FieldMarker(INPUT, desc, prefix)


def OutputField(*, desc: str = "", prefix: str = "") -> Any:  # noqa: N802
    """Mark a signature attribute as an output: ``intent: Literal[...] = hn.OutputField()``."""
    return _FieldMarker(OUTPUT, desc, prefix)


class SignatureMeta(type):
    """Collects the annotated fields of a Signature class and freezes the class."""

    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any):
        cls = super().__new__(mcls, name, bases, namespace)
        if not bases:  # the Signature base class itself
            type.__setattr__(cls, "_fields", ())
            type.__setattr__(cls, "_instructions", None)
            return cls
        fields: dict[str, Field] = {}
        for base in reversed(cls.__mro__[1:]):
            for f in base.__dict__.get("_fields", ()):
                fields[f.name] = f
        if "_fields" in namespace:  # built by make_signature
            fields = {f.name: f for f in namespace["_fields"]}
        else:
            hints = _annotations_of(cls, namespace)
            for attr, annotation in hints.items():
                marker = namespace.get(attr)
                if not isinstance(marker, _FieldMarker):
                    raise SignatureError(
                        f"signature {name}: field {attr!r} needs `= hn.InputField()` or `= hn.OutputField()`"
                    )
                check_type(annotation, where=f"signature {name}, field {attr!r}")
                fields[attr] = Field(attr, marker.role, annotation, marker.desc, marker.prefix)
            for attr, value in namespace.items():
                if isinstance(value, _FieldMarker) and attr not in hints:
                    raise SignatureError(f"signature {name}: field {attr!r} has no type annotation")
        type.__setattr__(cls, "_fields", tuple(fields.values()))
        if "_instructions" not in namespace:
            doc = namespace.get("__doc__")
            type.__setattr__(cls, "_instructions", _clean_doc(doc) if doc else None)
        _validate_fields(name, tuple(fields.values()))
        return cls

    def __setattr__(cls, name: str, value: Any) -> None:
        raise AttributeError(f"signature {cls.__name__} is immutable; use with_instructions() or with_fields()")

    def __eq__(cls, other: object) -> bool:
        if not isinstance(other, SignatureMeta):
            return NotImplemented
        return cls.instructions == other.instructions and cls.fields == other.fields

    def __hash__(cls) -> int:
        return hash((cls.instructions, tuple((f.name, f.role, f.type_name, f.desc) for f in cls.fields)))

    def __repr__(cls) -> str:
        ins = ", ".join(f"{f.name}: {f.type_name}" for f in cls.input_fields)
        outs = ", ".join(f"{f.name}: {f.type_name}" for f in cls.output_fields)
        return f"{cls.__name__}({ins} -> {outs})"

    @property
    def fields(cls) -> tuple[Field, ...]:
        return cls._fields

    @property
    def input_fields(cls) -> tuple[Field, ...]:
        return tuple(f for f in cls._fields if f.role == INPUT)

    @property
    def output_fields(cls) -> tuple[Field, ...]:
        return tuple(f for f in cls._fields if f.role == OUTPUT)

    @property
    def instructions(cls) -> str:
        if cls._instructions:
            return cls._instructions
        ins = ", ".join(f"`{f.name}`" for f in cls.input_fields)
        outs = ", ".join(f"`{f.name}`" for f in cls.output_fields)
        return f"From {ins}, produce {outs}."


class Signature(metaclass=SignatureMeta):
    """Base class of every signature; subclass it with annotated `InputField`/`OutputField` attributes."""

    def __init__(self) -> None:
        raise TypeError("signatures are used as classes: pass the class itself, e.g. hn.Predict(Classify)")

    @classmethod
    def with_instructions(cls, instructions: str) -> type[Signature]:
        """A new signature with the same fields and another instruction."""
        return make_signature(cls.fields, instructions=str(instructions).strip(), name=cls.__name__)

    @classmethod
    def with_fields(cls, fields: typing.Iterable[Field], *, instructions: str | None = None) -> type[Signature]:
        """A new signature with these fields (and the same instruction unless given)."""
        text = instructions if instructions is not None else cls._instructions
        return make_signature(tuple(fields), instructions=text, name=cls.__name__)

    @classmethod
    def prepend_output(cls, field: Field) -> type[Signature]:
        """A new signature with `field` as the first output (ChainOfThought adds `reasoning` this way)."""
        inputs, outputs = cls.input_fields, cls.output_fields
        return cls.with_fields((*inputs, field, *(f for f in outputs if f.name != field.name)))


def make_signature(fields: typing.Iterable[Field], *, instructions: str | None = None,
                   name: str = "Signature") -> type[Signature]:
    """Build a signature class from Field values."""
    fields = tuple(fields)
    _validate_fields(name, fields)
    return SignatureMeta(name, (Signature,), {"_fields": fields, "_instructions": instructions or None,
                                              "__doc__": instructions or None})


def ensure_signature(value: Any) -> type[Signature]:
    """Accept a Signature class or the string form; anything else is a clear error."""
    if isinstance(value, str):
        return parse_signature(value)
    if isinstance(value, SignatureMeta) and value is not Signature:
        return value
    raise SignatureError(
        f"expected a Signature class or a string like 'question -> answer', got {type(value).__name__}"
    )


def _validate_fields(name: str, fields: tuple[Field, ...]) -> None:
    seen: set[str] = set()
    for f in fields:
        if f.name in seen:
            raise SignatureError(f"signature {name}: duplicate field {f.name!r}")
        seen.add(f.name)
        check_type(f.annotation, where=f"signature {name}, field {f.name!r}")
    if not any(f.role == OUTPUT for f in fields):
        raise SignatureError(f"signature {name}: needs at least one output field")


def _clean_doc(doc: str) -> str:
    import inspect

    return inspect.cleandoc(doc)


def _annotations_of(cls: type, namespace: dict[str, Any]) -> dict[str, Any]:
    raw = namespace.get("__annotations__", {})
    if not raw:
        return {}
    try:
        hints = typing.get_type_hints(cls)
        return {k: hints[k] for k in raw}
    except Exception:  # noqa: BLE001 - string annotations that do not resolve: parse them ourselves
        return {k: (type_from_str(v) if isinstance(v, str) else v) for k, v in raw.items()}


# ----------------------------------------------------------------------------------------------------
# Types: which annotations are supported, and their text form (used in saved programs and string
# signatures). The text form is parsed by a small parser of our own: nothing is ever eval'd.

_SIMPLE = {"str": str, "int": int, "float": float, "bool": bool}


def check_type(annotation: Any, *, where: str) -> None:
    """Raise SignatureError unless `annotation` is a type honing knows how to prompt for and parse."""
    try:
        type_to_str(annotation)
    except SignatureError as exc:
        raise SignatureError(f"{where}: {exc}") from None


def is_optional(annotation: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return True, args[0]
    return False, annotation


def type_to_str(annotation: Any) -> str:
    """The canonical text of a supported type, e.g. ``Literal['a', 'b']`` or ``list[str]``."""
    if annotation in _SIMPLE.values():
        return annotation.__name__
    optional, inner = is_optional(annotation)
    if optional:
        return f"Optional[{type_to_str(inner)}]"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        if not args or not all(isinstance(a, (str, int, bool)) for a in args):
            raise SignatureError("Literal choices must be strings, ints or bools")
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is list and len(args) == 1:
        return f"list[{type_to_str(args[0])}]"
    if origin is dict and len(args) == 2 and args[0] is str:
        return f"dict[str, {type_to_str(args[1])}]"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = ", ".join(repr(m.value) for m in annotation)
        return f"Enum[{annotation.__name__}: {values}]"
    raise SignatureError(
        f"unsupported type {annotation!r}; use str, int, float, bool, Literal[...], list[...], "
        "dict[str, ...], Optional[...] or an enum.Enum"
    )


_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")|(?P<num>-?\d+)|(?P<name>[A-Za-z_]\w*)"
                    r"|(?P<punct>[\[\],:]))")


def type_from_str(text: str) -> Any:
    """Parse the text form of a type (the inverse of `type_to_str`); unknown names are errors."""
    tokens = _tokenize(text)
    annotation, rest = _parse_type(tokens, text)
    if rest:
        raise SignatureError(f"unexpected {rest[0][1]!r} in type {text!r}")
    return annotation


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SignatureError(f"cannot read type {text!r} at position {pos}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


def _parse_type(tokens: list[tuple[str, str]], text: str) -> tuple[Any, list[tuple[str, str]]]:
    if not tokens or tokens[0][0] != "name":
        raise SignatureError(f"expected a type name in {text!r}")
    name, rest = tokens[0][1], tokens[1:]
    if name in _SIMPLE:
        return _SIMPLE[name], rest
    if name in ("list", "List", "Optional", "dict", "Dict", "Literal", "Enum"):
        if not rest or rest[0] != ("punct", "["):
            raise SignatureError(f"type {name} in {text!r} needs arguments in [...]")
        rest = rest[1:]
        if name == "Literal":
            values: list[Any] = []
            while True:
                kind, tok = rest[0] if rest else ("", "")
                if kind == "str":
                    values.append(_unquote(tok))
                elif kind == "num":
                    values.append(int(tok))
                elif kind == "name" and tok in ("True", "False"):
                    values.append(tok == "True")
                elif kind == "name":
                    values.append(tok)  # bare words: Literal[yes, no]
                else:
                    raise SignatureError(f"bad Literal choice in {text!r}")
                rest = rest[1:]
                if rest and rest[0] == ("punct", ","):
                    rest = rest[1:]
                    continue
                break
            rest = _expect(rest, "]", text)
            return Literal[tuple(values)], rest  # type: ignore[valid-type]
        if name == "Enum":
            if not rest or rest[0][0] != "name":
                raise SignatureError(f"Enum needs a name in {text!r}")
            enum_name, rest = rest[0][1], _expect(rest[1:], ":", text)
            values = []
            while rest and rest[0][0] in ("str", "num"):
                values.append(_unquote(rest[0][1]) if rest[0][0] == "str" else int(rest[0][1]))
                rest = rest[1:]
                if rest and rest[0] == ("punct", ","):
                    rest = rest[1:]
            rest = _expect(rest, "]", text)
            members = {(str(v).upper() if str(v).isidentifier() else f"V{i}"): v for i, v in enumerate(values)}
            return enum.Enum(enum_name, members), rest
        first, rest = _parse_type(rest, text)
        if name in ("dict", "Dict"):
            if first is not str:
                raise SignatureError(f"dict keys must be str in {text!r}; use dict[str, ...]")
            rest = _expect(rest, ",", text)
            second, rest = _parse_type(rest, text)
            return dict[first, second], _expect(rest, "]", text)  # type: ignore[valid-type]
        rest = _expect(rest, "]", text)
        if name in ("list", "List"):
            return list[first], rest  # type: ignore[valid-type]
        return typing.Optional[first], rest
    known = ", ".join([*_SIMPLE, "list[...]", "dict[str, ...]", "Optional[...]", "Literal[...]"])
    raise SignatureError(f"unknown type name {name!r} in {text!r}; known: {known}")


def _expect(rest: list[tuple[str, str]], punct: str, text: str) -> list[tuple[str, str]]:
    if not rest or rest[0] != ("punct", punct):
        raise SignatureError(f"expected {punct!r} in type {text!r}")
    return rest[1:]


def _unquote(token: str) -> str:
    # The token is a Python string literal as written by `repr` (type_to_str): read its escapes
    # (\n, \x00, \u1234, ...) with the literal parser, which evaluates nothing but literals.
    try:
        value = ast.literal_eval(token)
    except (ValueError, SyntaxError):
        value = None
    if isinstance(value, str):
        return value
    return re.sub(r"\\(.)", r"\1", token[1:-1])


def parse_signature(text: str, *, instructions: str | None = None) -> type[Signature]:
    """The string form: ``"question -> answer"`` or ``"a: int, b: int -> sum: int"``."""
    arrows = _top_level_arrows(text)
    if len(arrows) != 1:
        raise SignatureError(f"signature {text!r} must contain exactly one '->'")
    left, right = text[:arrows[0]], text[arrows[0] + 2:]
    fields = [*_parse_side(left, INPUT, text), *_parse_side(right, OUTPUT, text)]
    if not any(f.role == INPUT for f in fields):
        raise SignatureError(f"signature {text!r} has no input fields")
    return make_signature(fields, instructions=instructions, name="StringSignature")


def _parse_side(side: str, role: str, text: str) -> list[Field]:
    parts = _split_top_level(side)
    fields = []
    for part in parts:
        part = part.strip()
        if not part:
            raise SignatureError(f"empty field name in signature {text!r}")
        name, _, type_text = part.partition(":")
        name = name.strip()
        if not name.isidentifier():
            raise SignatureError(f"bad field name {name!r} in signature {text!r}")
        annotation = type_from_str(type_text) if type_text.strip() else str
        fields.append(Field(name, role, annotation))
    return fields


def _top_level_arrows(text: str) -> list[int]:
    """Positions of the "->" that are not inside a quoted Literal choice."""
    arrows, quote, escape = [], "", False
    for i, ch in enumerate(text):
        if quote:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif text.startswith("->", i):
            arrows.append(i)
    return arrows


def _split_top_level(side: str) -> list[str]:
    parts, depth, current, quote, escape = [], 0, [], "", False
    for ch in side:
        if quote:
            current.append(ch)
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


# ----------------------------------------------------------------------------------------------------
# Input values: checked and converted before any LM call, so a wrong type is an error naming the field.

def coerce_input(field: Field, value: Any) -> Any:
    """Check and convert one input value to its field's type (an `InputError` names the field)."""
    annotation = field.annotation
    optional, inner = is_optional(annotation)
    if value is None:
        if optional:
            return None
        raise InputError(f"input field {field.name!r} is None but its type is {field.type_name}")
    try:
        return _coerce(inner, value)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"input field {field.name!r} expects {field.type_name}, got {type(value).__name__} {value!r:.80}: {exc}"
        ) from None


def _coerce(annotation: Any, value: Any) -> Any:
    if annotation is str:
        return value if isinstance(value, str) else str(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise TypeError("not a bool")
    if annotation is int:
        if isinstance(value, bool):
            raise TypeError("a bool is not an int")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        raise TypeError("not an int")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        raise TypeError("not a number")
    origin = typing.get_origin(annotation)
    if origin is Literal:
        if value in typing.get_args(annotation):
            return value
        raise ValueError(f"not one of {typing.get_args(annotation)}")
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value if isinstance(value, annotation) else annotation(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise TypeError("not a list")
        (item,) = typing.get_args(annotation)
        return [_coerce(item, v) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError("not a dict")
        return dict(value)
    return value
