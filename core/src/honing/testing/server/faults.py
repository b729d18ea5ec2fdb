"""Fault injection: which faults exist, how a `FaultPlan` draws them, and what each does to a reply.

Faults (`FAULT_KINDS`), drawn at random by a `FaultPlan` or scripted for the next requests with
`srv.script([...])`, apply to the POST endpoints:

- ``"429"``, ``"500"``, ``"503"`` (and any other 3-digit status): an OpenAI-style JSON error;
- ``"429_retry_after"``: a 429 with a ``Retry-After`` header (`retry_after` seconds);
- ``"timeout"``: waits `timeout_sleep` seconds (longer than the client's timeout) before answering;
- ``"drop"``: closes the connection without a response;
- ``"truncated_json"``: a 200 whose body is the first half of the JSON;
- ``"empty"``: a well-formed reply whose content is ``""``;
- ``"garbage"``: a well-formed reply whose content is random text (for parser tests);
- ``"garbage_body"``: a 200 whose body is random non-JSON text;
- ``"ok"``: no fault (useful in scripts).

``"drop"`` and ``"timeout"`` act on the connection and the clock, so the server applies them itself;
``"empty"`` and ``"garbage"`` change the reply text; the rest replace or cut the route's reply
(`fault_reply`, `truncate`).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

from honing.testing.server.messages import Reply, error_reply

#: The fault kinds a `FaultPlan` draws from by default.
FAULT_KINDS: tuple[str, ...] = (
    "429", "429_retry_after", "500", "503", "timeout", "drop", "truncated_json", "empty", "garbage",
)
_EXTRA_KINDS = ("ok", "garbage_body")

_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
          "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango")


def check_kind(kind: str) -> str:
    """`kind` if it is a known fault kind or a 3-digit HTTP status; else ValueError."""
    if kind in FAULT_KINDS or kind in _EXTRA_KINDS or (len(kind) == 3 and kind.isdigit()):
        return kind
    raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS + _EXTRA_KINDS)} "
                     "or a 3-digit HTTP status")


@attrs.frozen
class FaultPlan:
    """Inject a fault into each POST request with probability `rate`, picking uniformly from `kinds`.

    Draws come from `random.Random(seed)` in the order requests arrive, so a single-threaded test sees
    the same faults on every run.
    """

    rate: float = attrs.field(default=0.0, validator=attrs.validators.and_(attrs.validators.ge(0.0),
                                                                           attrs.validators.le(1.0)))
    kinds: tuple[str, ...] = attrs.field(default=FAULT_KINDS, converter=tuple)
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        if not self.kinds:
            raise ValueError("a FaultPlan needs at least one kind")
        for kind in self.kinds:
            check_kind(kind)


def garbage_text(rng: random.Random, n_words: int) -> str:
    """`n_words` random words, each followed by a random punctuation character (for parser tests)."""
    return " ".join(rng.choice(_WORDS) + rng.choice("!?#{}[],:\"") for _ in range(n_words))


def _fmt_seconds(value: float | str) -> str:
    if isinstance(value, str):  # sent as is (e.g. an HTTP date)
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def fault_reply(fault: str, retry_after: float | str, garbage: Callable[[int], str]) -> Reply | None:
    """The reply that `fault` sends instead of the route's, or None when the route should answer.

    `garbage(n_words)` makes the body of a ``"garbage_body"`` fault.
    """
    if fault == "429_retry_after":
        return error_reply(429, "rate limited, retry later", "rate_limit_error",
                           {"Retry-After": _fmt_seconds(retry_after)})
    if len(fault) == 3 and fault.isdigit():
        status = int(fault)
        kind = "rate_limit_error" if status == 429 else (
            "server_error" if status >= 500 else "invalid_request_error")
        return error_reply(status, f"injected fault {status}", kind)
    if fault == "garbage_body":
        return Reply(200, raw=garbage(40).encode(), headers={"Content-Type": "text/plain"})
    return None


def truncate(reply: Reply) -> Reply:
    """A ``"truncated_json"`` fault: a 200 whose body is the first half of `reply`'s."""
    data = reply.encode()
    return Reply(200, raw=data[: len(data) // 2])
