"""JSON text and JSON data: scanning text for brackets outside strings without parsing it, and making any
value plain JSON data.

The scanner is shared by the adapters (find the JSON object a model wrapped in prose) and the loader (refuse
absurdly deep nesting before `json.loads` recurses into it); `json_safe` by everything that writes JSON.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator, Mapping
from typing import Any


def bracket_depths(text: str, start: int = 0) -> Iterator[tuple[int, int]]:
    """Yield (index, depth after it) for every `[ { ] }` in text[start:] that is not inside a string."""
    depth = 0
    in_string = escape = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            yield i, depth
        elif ch in "]}":
            depth -= 1
            yield i, depth


def first_json(text: str) -> str:
    """The first balanced {...} or [...] in text (models like to wrap JSON in prose or fences)."""
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return text
    for i, depth in bracket_depths(text, start):
        if depth == 0:
            return text[start:i + 1]
    return text[start:]


def nesting_depth(text: str) -> int:
    """Maximum bracket depth outside strings (linear; run before json.loads)."""
    return max((depth for _, depth in bracket_depths(text)), default=0)


def json_safe(value: Any) -> Any:
    """`value` as plain JSON data, for run logs, records and saved demos (the one such helper in honing).

    Mappings become objects with string keys, tuples and lists become arrays, enums their values,
    non-finite floats text; an object with ``to_state()`` (an LM, an embedder) is saved as that state, a
    function or class as its qualified name, and anything else as its ``str()``.
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    to_state = getattr(value, "to_state", None)
    if callable(to_state):
        return json_safe(to_state())
    if callable(value) and isinstance(getattr(value, "__qualname__", None), str):
        return value.__qualname__
    return str(value)
