"""The values that cross the boundary between adapters and the LM client.

An adapter builds an `LMRequest`; the LM client sends it (through litellm, cache, budget and retries)
and hands back a `Completion`. Both are plain frozen values that serialise to JSON, so a completion can
be cached on disk and a request can be hashed into a cache key.
"""

from __future__ import annotations

from typing import Any

import attrs


def _tuple_of_str(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def _messages(value: Any) -> tuple[dict[str, str], ...] | None:
    if value is None:
        return None
    return tuple({"role": str(m["role"]), "content": str(m["content"])} for m in value)


def _lists_for_tuples(_inst: Any, _field: Any, value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@attrs.frozen
class LMRequest:
    """One request to a language model, independent of the provider.

    Exactly one of `messages` (chat) or `prompt` (a raw text transcript, completed as is) is set.

    - `stop`: stop sequences.
    - `grammar`: a llama.cpp GBNF grammar that constrains decoding (local models only; ignored elsewhere).
    - `choices`: when set, the model does not decode: it scores each choice as a continuation of the
      prompt and returns their log-likelihoods in `Completion.choice_logprobs` (local models only).
    - `response_format`: an OpenAI-style `response_format` (JSON schema) for providers that support it.
    - `temperature`, `max_tokens`, `seed`: sampling; `None` means the LM's default.
    - `rollout`: varies the cache key, so an optimizer can ask for a fresh sample of a request it
      already made; on local models it is also the sampling seed when `seed` is None (reproducible
      samples).
    """

    messages: tuple[dict[str, str], ...] | None = attrs.field(default=None, converter=_messages)
    prompt: str | None = None
    stop: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    grammar: str | None = None
    choices: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    response_format: dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    rollout: int | None = None

    def __attrs_post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("an LMRequest needs exactly one of `messages` or `prompt`")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict with only the fields that are set (stable for hashing)."""
        raw = attrs.asdict(self, value_serializer=_lists_for_tuples)
        return {k: v for k, v in raw.items() if v not in (None, (), [])}

    def text(self) -> str:
        """The request as one string (for token estimates and for people reading it)."""
        if self.prompt is not None:
            return self.prompt
        return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in self.messages or ())


@attrs.frozen
class Usage:
    """Token and cost accounting for one call or summed over many."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cache_hits: int = 0
    #: prompt tokens that the local model did not have to evaluate because they were already in its
    #: KV cache (a shared prefix with the previous call).
    reused_prompt_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            calls=self.calls + other.calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost=self.cost + other.cost,
            cache_hits=self.cache_hits + other.cache_hits,
            reused_prompt_tokens=self.reused_prompt_tokens + other.reused_prompt_tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class Completion:
    """What came back: the text, or the choice scores for a `choices` request, and the usage.

    `usage` is the cost of producing it; a completion served from the cache has `cached=True` and is
    accounted as a cache hit, not as a call.
    """

    text: str
    model: str
    usage: Usage = Usage()
    choice_logprobs: dict[str, float] | None = None
    finish_reason: str | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "model": self.model,
            "usage": self.usage.to_dict(),
            "choice_logprobs": self.choice_logprobs,
            "finish_reason": self.finish_reason,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, cached: bool = False) -> Completion:
        return cls(
            text=raw["text"],
            model=raw["model"],
            usage=Usage(**raw.get("usage", {})),
            choice_logprobs=raw.get("choice_logprobs"),
            finish_reason=raw.get("finish_reason"),
            cached=cached,
        )
