"""Scanning JSON-like text for brackets outside strings, without parsing it.

Shared by the adapters (find the JSON object a model wrapped in prose) and the loader (refuse absurdly deep
nesting before `json.loads` recurses into it).
"""

from __future__ import annotations

from collections.abc import Iterator


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
