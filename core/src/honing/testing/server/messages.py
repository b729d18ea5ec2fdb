"""The records every part of the test server passes around: a received request and a reply.

A route handler takes a `RecordedRequest` and returns a `Reply`; the server keeps the same records of every
request for tests to inspect. `error_reply` builds the OpenAI-style JSON error that routes, faults and the
server itself answer with, and `count_tokens` is the word count that stands in for tokens in usage figures.
"""

from __future__ import annotations

import json
from typing import Any

import attrs


@attrs.frozen
class RecordedRequest:
    """One request the server received: `headers` have lower-case names; `body` is the parsed JSON
    (None when the body was empty or not JSON); `fault` is the fault injected into it ("ok" if none)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float
    fault: str = "ok"
    #: values of the route's ``{name}`` path segments
    params: dict[str, str] = attrs.Factory(dict)

    @property
    def json(self) -> Any:
        return self.body


@attrs.define
class Reply:
    """What a route handler returns: a status, a JSON-able body (or raw bytes) and extra headers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = attrs.Factory(dict)
    raw: bytes | None = None

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.body).encode()


def error_reply(status: int, message: str, kind: str = "server_error",
                headers: dict[str, str] | None = None) -> Reply:
    """An OpenAI-style JSON error: ``{"error": {"message", "type", "param", "code"}}``."""
    return Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": str(status)}},
                 headers=dict(headers or {}))


def count_tokens(text: str) -> int:
    """The server's token count: the words (white-space separated) in `text`."""
    return len(text.split())
