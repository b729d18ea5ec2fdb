"""Keeping API keys out of everything honing prints, logs, caches, saves or raises.

- `Secret` holds a key; its repr and str are ``***`` and it refuses to be pickled.
- `scrub(text)` replaces every key honing knows about (registered `Secret` values and API keys read from
  the environment) and anything shaped like a key (``sk-...``, ``Bearer ...``, ``api_key=...``) with
  ``***``.
- `is_secret_name` / `without_secrets` drop settings that carry credentials (``api_key``, ``api_base``,
  ``*_token``, ``*secret*``, headers...) from dicts that end up in cache keys or saved state.
- `safe_url` tells whether a URL can be saved (no userinfo, no query string).
- `ScrubFilter` is a logging filter that scrubs records; `install_log_scrubbing()` puts it on honing's and
  litellm's loggers.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.parse
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"

#: Shapes of credentials worth masking even when honing was not told the key.
_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-*.]{3,}"),                     # OpenAI / Anthropic style keys
    re.compile(r"(?i)\bBearer\s+[^\s'\",}]+"),                      # Authorization header values
    re.compile(r"(?i)(\b(?:api[_-]?key|x-api-key|access[_-]?token|secret)['\"]?\s*[:=]\s*['\"]?)"
               r"(?!\*\*\*)[^\s'\",}&]+"),                          # api_key=..., "api-key": "..."
)

_MIN_SECRET_LEN = 4  # shorter values are not masked by value (they would mangle ordinary text)
_MIN_ENV_SECRET_LEN = 8  # env vars named like keys but holding short flags ("true") are left alone

_registry_lock = threading.Lock()
_live: weakref.WeakSet[Secret] = weakref.WeakSet()


class Secret:
    """An API key that does not show itself: ``repr`` and ``str`` are ``***``; pickling is refused.

    `reveal()` returns the value, for the one place it must go (the provider call).
    """

    __slots__ = ("__weakref__", "_value")

    def __init__(self, value: str | Secret) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError(f"an API key must be a string, not {type(value).__name__}")
        self._value = value
        with _registry_lock:
            _live.add(self)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> Any:
        raise TypeError("refusing to pickle an API key (honing saves LMs with LM.to_state(), without keys)")

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __copy__(self) -> Secret:
        return self


def _env_key_names() -> list[str]:
    return [name for name in os.environ if _ENV_KEY_RE.search(name)]


_ENV_KEY_RE = re.compile(r"(API_KEY|_TOKEN|SECRET|ACCESS_KEY)$|^(API_KEY|TOKEN)$", re.IGNORECASE)


def known_secret_values() -> list[str]:
    """Every key value honing knows: live `Secret`s and API-key-like environment variables."""
    with _registry_lock:
        values = {s.reveal() for s in list(_live)}
    for name in _env_key_names():
        value = os.environ.get(name)
        if value and len(value) >= _MIN_ENV_SECRET_LEN:
            values.add(value)
    return sorted((v for v in values if len(v) >= _MIN_SECRET_LEN), key=len, reverse=True)


def scrub(text: Any, secrets: Iterable[str | Secret | None] = ()) -> str:
    """`text` as a string with known keys, `secrets`, and key-shaped substrings replaced by ``***``."""
    out = text if isinstance(text, str) else str(text)
    extra = [s.reveal() if isinstance(s, Secret) else s for s in secrets]
    values = sorted({v for v in [*extra, *known_secret_values()] if v and len(v) >= _MIN_SECRET_LEN},
                    key=len, reverse=True)
    for value in values:
        if value in out:
            out = out.replace(value, MASK)
    out = _PATTERNS[0].sub(MASK, out)
    out = _PATTERNS[1].sub("Bearer " + MASK, out)
    out = _PATTERNS[2].sub(lambda m: m.group(1) + MASK, out)
    return out


# --- settings that carry credentials ----------------------------------------------------------------

_SECRET_NAMES = frozenset({
    "api_key", "api_base", "base_url", "api_token", "token", "password", "headers", "extra_headers",
    "organization", "azure_ad_token", "azure_ad_token_provider", "aws_access_key_id",
    "aws_secret_access_key", "aws_session_token", "vertex_credentials", "client_secret", "client_id",
    "tenant_id", "auth", "authorization", "proxy", "http_client", "client",
})
_SECRET_NAME_RE = re.compile(r"(?i)(api_?key|secret|passw|credential|_token$|^token|auth)")


def is_secret_name(name: str) -> bool:
    """True for setting names that hold credentials or endpoints that may embed them."""
    return name.lower() in _SECRET_NAMES or bool(_SECRET_NAME_RE.search(name))


def without_secrets(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `mapping` without credential-carrying names and without `Secret` values."""
    return {k: v for k, v in mapping.items() if not is_secret_name(k) and not isinstance(v, Secret)}


def safe_url(url: str | None) -> bool:
    """True when `url` can be saved: it has no userinfo (``user:pass@``), query string or fragment."""
    if not url:
        return False
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    return not (parts.username or parts.password or parts.query or parts.fragment or "@" in parts.netloc)


# --- logging ----------------------------------------------------------------------------------------

class ScrubFilter(logging.Filter):
    """Scrubs keys from a record's message (formatting it first) and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the logger's problem, not ours
            return True
        cleaned = scrub(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
            record.exc_text = None
            record.msg = f"{record.msg}\n{exc_text}"
        return True


#: Loggers that may see request details: honing's own and litellm's / the OpenAI SDK's.
LOGGERS_TO_SCRUB = ("honing", "honing.lm", "LiteLLM", "LiteLLM Router", "LiteLLM Proxy",
                    "openai._base_client", "httpx")

_installed = False
_install_lock = threading.Lock()


def install_log_scrubbing(names: Iterable[str] = LOGGERS_TO_SCRUB) -> None:
    """Attach one `ScrubFilter` to each named logger (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        filt = ScrubFilter()
        for name in names:
            logger = logging.getLogger(name)
            if not any(isinstance(f, ScrubFilter) for f in logger.filters):
                logger.addFilter(filt)
        _installed = True
