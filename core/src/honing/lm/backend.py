"""`Backend`: what an `LM` sends a request to, once its own policy has let the request through.

`honing.lm.client.LM` owns everything a call is accountable for, the same way for every model: the
cache, the API key and secret scrubbing, budget reservations, retries, usage and history. A backend
only answers: ``complete(request) -> Completion`` for a request whose LM defaults are filled in. Two
exist: the hosted one in `honing.lm.client` (``litellm.completion`` over HTTP) and
`honing.lm.local.backend.LocalBackend` (the embedded llama.cpp engine, called directly).

A backend raises what went wrong: the LM maps it to a honing error (a `HoningError` is passed through
as it is) and decides whether to retry.
"""

from __future__ import annotations

from typing import Protocol

from honing.lm.types import Completion, LMRequest

__all__ = ["Backend"]


class Backend(Protocol):
    """Where an `LM` sends its requests (see the module docstring)."""

    def complete(self, request: LMRequest) -> Completion:
        """Send `request` once (no retries, no cache) and return its completion with its usage and cost."""
        ...

    def count_prompt_tokens(self, request: LMRequest) -> int:
        """The prompt tokens of `request`, for budget reservations (may raise: the LM then estimates)."""
        ...

    def price(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Dollars for that many tokens (0.0 when free or unknown), for budget reservations."""
        ...

    def context_window(self) -> int | None:
        """Tokens the model reads at most (prompt plus completion), or None when unknown."""
        ...
