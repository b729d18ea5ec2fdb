"""Adapters turn a signature, demos and inputs into LM requests and parse replies into typed values.

The LM picks its default (`transcript` for the embedded local model, `chat` otherwise);
``hn.configure(adapter=...)`` or ``Predict(..., adapter=...)`` override it with an instance or a name
(names are looked up by `honing.plugins.lookup.resolve_adapter`). More adapters plug in through the
`register_adapters` hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from honing.adapters.base import Adapter
from honing.adapters.chat import ChatAdapter
from honing.adapters.json import JSONAdapter
from honing.adapters.transcript import TranscriptAdapter

__all__ = ["Adapter", "ChatAdapter", "JSONAdapter", "TranscriptAdapter", "builtin_adapters",
           "default_adapter_name"]


def builtin_adapters() -> dict[str, Callable[[], Adapter]]:
    """The core's adapters, registered through the plugin manager like any plugin's."""
    return {"transcript": TranscriptAdapter, "chat": ChatAdapter, "json": JSONAdapter}


def default_adapter_name(lm: Any) -> str:
    """An LM may name its preferred adapter (`default_adapter`); else local models get the transcript."""
    preferred = getattr(lm, "default_adapter", None)
    if isinstance(preferred, str):
        return preferred
    return "transcript" if getattr(lm, "provider", None) == "local" else "chat"
