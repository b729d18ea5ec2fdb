"""Turning reply text into typed values (and typed values back into prompt text).

Lenient where a small model is sloppy ("8", " 8.", "8\\n" are all 8; Literal choices match
case-insensitively and ignore quotes), strict where guessing would be wrong: anything else raises a
`ParseError` that names the field, the expected type and the raw text.
"""

from __future__ import annotations

import enum
import json
import re
import typing
from typing import Any, Literal

from honing.errors import ParseError
from honing.jsontext import first_json
from honing.signatures import Field, is_optional

_INT = re.compile(r"[-+]?\d[\d,_]*")
_FLOAT = re.compile(r"[-+]?(?:\d[\d,_]*\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)")
_TRUE = {"true", "yes", "y", "1", "correct"}
_FALSE = {"false", "no", "n", "0", "incorrect"}


def render_value(value: Any) -> str:
    """How a value is written into a prompt."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "None"
    return str(value)


def parse_value(text: str, field: Field) -> Any:
    """Convert `text` to `field`'s type, or raise ParseError naming the field."""
    try:
        return _parse(text, field.annotation)
    except (ValueError, TypeError) as exc:
        raise ParseError(
            f"could not parse output field {field.name!r} as {field.type_name}: {exc}; raw text: {text!r:.200}",
            field=field.name, expected=field.type_name, raw=text,
        ) from None


def _parse(text: Any, annotation: Any) -> Any:
    optional, inner = is_optional(annotation)
    if isinstance(text, str):
        stripped = text.strip()
        if optional and stripped.lower() in ("", "none", "null", "n/a"):
            return None
    if not isinstance(text, str):  # a JSON value from the JSON adapter (null is fine for Optional)
        return _from_json_value(text, annotation)
    stripped = text.strip()
    if inner is str:
        return _strip_quotes(stripped)
    if inner is int:
        m = _INT.search(stripped)
        if not m:
            raise ValueError("no integer in the reply")
        number = m.group().replace(",", "").replace("_", "")
        fraction = re.match(r"\.(\d+)", stripped[m.end():])
        if fraction and fraction.group(1).strip("0"):
            raise ValueError(f"{m.group()}{fraction.group()} is not a whole number")
        return int(number)
    if inner is float:
        m = _FLOAT.search(stripped)
        if not m:
            raise ValueError("no number in the reply")
        return float(m.group().replace(",", "").replace("_", ""))
    if inner is bool:
        words = _strip_quotes(stripped).split()
        word = words[0].strip(".!,;:'\"").lower() if words else ""
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError("expected True or False")
    choices = closed_values(inner)
    if choices is not None:
        return _match_choice(stripped, choices)
    origin = typing.get_origin(inner)
    if origin in (list, dict):
        try:
            value = json.loads(first_json(stripped))
        except (ValueError, json.JSONDecodeError):
            if origin is list:
                items = [line.strip(" -*•\t").strip() for line in re.split(r"[\n,]", stripped)]
                value = [i for i in items if i]
            else:
                raise ValueError("expected a JSON object") from None
        return _from_json_value(value, inner)
    raise ValueError(f"unsupported type {inner!r}")


def closed_values(annotation: Any) -> list[Any] | None:
    """The allowed values of a closed type (Literal, enum, bool), or None for open types."""
    _, inner = is_optional(annotation)
    if typing.get_origin(inner) is Literal:
        return list(typing.get_args(inner))
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return list(inner)
    if inner is bool:
        return [True, False]
    return None


def _match_choice(text: str, choices: list[Any]) -> Any:
    by_text = {render_value(c).lower(): c for c in choices}
    if isinstance(choices[0], enum.Enum):
        by_text.update({c.name.lower(): c for c in choices})
    exact = _strip_quotes(text.strip()).lower()
    if exact in by_text:  # before stripping punctuation: a choice may itself end in "." or "!"
        return by_text[exact]
    cleaned = _strip_quotes(text).strip().strip(".!,;").strip()
    if cleaned.lower() in by_text:
        return by_text[cleaned.lower()]
    # "pin blocked" for "pin_blocked": spaces, underscores and hyphens are interchangeable when that
    # names exactly one choice
    loose: dict[str, list[Any]] = {}
    for key, choice in by_text.items():
        loose.setdefault(_loose(key), []).append(choice)
    matches = loose.get(_loose(cleaned.lower()), [])
    if len({id(m) for m in matches}) == 1:
        return matches[0]
    # the reply starts with a choice and then rambles: take the longest choice it starts with
    lowered = cleaned.lower()
    starts = [t for t in by_text if lowered.startswith(t) and (len(lowered) == len(t) or not lowered[len(t)].isalnum()
                                                              and lowered[len(t)] != "_")]
    if starts:
        return by_text[max(starts, key=len)]
    allowed = ", ".join(render_value(c) for c in choices)
    raise ValueError(f"expected one of: {allowed}")


def _loose(text: str) -> str:
    return " ".join(re.split(r"[\s_-]+", text)).strip()


def _from_json_value(value: Any, annotation: Any) -> Any:
    optional, inner = is_optional(annotation)
    if value is None:
        if optional:
            return None
        raise ValueError("got null")
    if inner is str:
        return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    if inner in (int, float, bool) or closed_values(inner) is not None:
        if isinstance(value, str):
            return _parse(value, inner)
        if inner is int and isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
            return int(value)
        if inner is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if inner is bool and isinstance(value, bool):
            return value
        choices = closed_values(inner)
        if choices is not None:
            return _match_choice(render_value(value), choices)
        raise ValueError(f"got {type(value).__name__}")
    origin = typing.get_origin(inner)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError("expected a list")
        (item,) = typing.get_args(inner)
        return [_from_json_value(v, item) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError("expected an object")
        _, item = typing.get_args(inner)
        return {str(k): _from_json_value(v, item) for k, v in value.items()}
    raise ValueError(f"unsupported type {inner!r}")


def _strip_quotes(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"`":
        return text[1:-1].strip()
    return text
