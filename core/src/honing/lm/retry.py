"""When and how long to wait before trying an LM call again.

Retryable: rate limits (429), server errors (5xx), timeouts (408), connection failures and unreadable
replies. Everything else (400, 401, 403, 404, 422...) fails at once.

The wait is exponential backoff with full jitter, ``uniform(0, min(cap, base * 2**attempt))``, unless the
server sent ``Retry-After`` (seconds or an HTTP date), which is honoured (up to `max_retry_after`).
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping
from typing import Any

import attrs

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
NON_RETRYABLE_STATUS = frozenset({400, 401, 402, 403, 404, 405, 413, 415, 422})

#: Exception class names (anywhere in the MRO) that mean "try again" whatever their status says.
_RETRYABLE_NAMES = frozenset({
    "Timeout", "APITimeoutError", "APIConnectionError", "ServiceUnavailableError", "InternalServerError",
    "BadGatewayError", "RateLimitError", "TimeoutException", "ConnectError", "ReadError",
    "RemoteProtocolError", "ConnectionError", "TimeoutError",
})
#: ... and names that mean "don't", even when litellm wraps them with a 5xx-looking status.
_FATAL_NAMES = frozenset({
    "AuthenticationError", "PermissionDeniedError", "NotFoundError", "BadRequestError",
    "UnprocessableEntityError", "ContextWindowExceededError", "ContentPolicyViolationError",
    "UnsupportedParamsError", "InvalidRequestError", "BudgetExceededError",
})


@attrs.frozen
class RetryPolicy:
    """`num_retries` retries after the first attempt, full-jitter backoff between `base` and `cap`."""

    num_retries: int = 5
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 120.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter for retry number `attempt` (0 for the first retry)."""
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 60)))
        return (rng or random).uniform(0.0, max(ceiling, 0.0))

    def delay(self, attempt: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to wait before retry `attempt`: the server's Retry-After if given, else backoff."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_retry_after)
        return self.backoff(attempt, rng)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or an HTTP date), or None if unreadable."""
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    try:
        value = headers.get(name)
    except Exception:  # noqa: BLE001 - any mapping-ish object
        value = None
    if value is None and isinstance(headers, Mapping):
        for k, v in headers.items():
            if str(k).lower() == name:
                return str(v)
    return None if value is None else str(value)


def response_headers(exc: BaseException) -> list[Any]:
    """The response headers an exception carries. litellm keeps the provider's on
    ``exc.litellm_response_headers`` (its ``exc.response`` is rebuilt and may have lost them)."""
    found = []
    for attr in ("litellm_response_headers", "headers"):
        h = getattr(exc, attr, None)
        if h:
            found.append(h)
    response = getattr(exc, "response", None)
    h = getattr(response, "headers", None)
    if h:
        found.append(h)
    return found


def retry_after_from(exc: BaseException) -> float | None:
    """The ``Retry-After`` (or ``retry-after-ms``) of the response behind `exc`, in seconds."""
    for headers in response_headers(exc):
        ms = _header(headers, "retry-after-ms")
        if ms is not None:
            try:
                return max(0.0, float(ms) / 1000)
            except ValueError:
                pass
        seconds = parse_retry_after(_header(headers, "retry-after"))
        if seconds is not None:
            return seconds
    return None


def status_code_of(exc: BaseException) -> int | None:
    for attr in ("status_code", "http_status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


def _mro_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def is_retryable(exc: BaseException) -> bool:
    """True when trying `exc`'s call again may work (see the module docstring)."""
    names = _mro_names(exc)
    status = status_code_of(exc)
    # litellm raises most failures as its own classes, with the HTTP status in `status_code`; check the
    # most specific class first (e.g. a NotFoundError is a 404 whatever else it inherits).
    own = type(exc).__name__
    if own in _FATAL_NAMES:
        return False
    if own in _RETRYABLE_NAMES:
        return True
    if status is not None:
        if status in RETRYABLE_STATUS or status >= 500:
            return True
        if status in NON_RETRYABLE_STATUS or 400 <= status < 500:
            return False
    if names & _FATAL_NAMES:
        return False
    return bool(names & _RETRYABLE_NAMES)
