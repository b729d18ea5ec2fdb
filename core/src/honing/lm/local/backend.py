"""`LocalBackend`: how `honing.lm.client.LM` runs a request on the embedded engine.

The LM client hands the backend an `LMRequest` (its own defaults filled in) and gets a `Completion`
back; nothing else travels between them. There is no litellm on this path, and no policy: the cache,
retries, budgets, secrets and usage accounting are the client's, for local and hosted models alike.
Errors the engine raises (`LMError`, `ConfigurationError`) reach the client as they are.

`run_on_engine` is the one place that turns a request's fields into an engine call; the litellm
provider shim (`honing.lm.local.provider`) uses it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from honing.lm.local.engine import LocalEngine, get_engine
from honing.lm.local.models import resolve_model_path
from honing.lm.types import Completion, LMRequest, Usage

__all__ = ["LocalBackend", "run_on_engine", "sampling_seed"]


def sampling_seed(request: LMRequest) -> int | None:
    """The seed a local model samples `request` with.

    A sampled request (temperature above 0) that names no `seed` is seeded with its `rollout` (0 when
    None): the same request and rollout then give the same text whether or not it was cached, so a
    seeded optimizer's proposals reproduce; a fresh sample is a new rollout, as with the cache. Greedy
    requests need no seed (None).
    """
    if request.seed is not None:
        return request.seed
    if request.temperature:
        return request.rollout or 0
    return None


def run_on_engine(engine: LocalEngine, *, prompt: str | None, messages: Sequence[Mapping[str, str]] | None,
                  choices: Sequence[str] = (), stop: str | Iterable[str] = (), grammar: str | None = None,
                  max_tokens: int | None = None, temperature: float | None = None,
                  seed: int | None = None) -> dict[str, Any]:
    """One request on `engine`: score `choices` if there are any, else decode.

    `prompt` (a raw text, completed as is) or `messages` (rendered with the model's chat template). Returns
    the engine's result dict (``text``, ``prompt_tokens``, ``completion_tokens``, ``reused_prompt_tokens``,
    ``finish_reason``) plus ``choice_logprobs`` (None when nothing was scored). `stop` may be one string.
    """
    if choices:
        choices = [str(c) for c in choices]
        if prompt is not None:
            result = engine.score_choices(prompt, choices)
        else:
            result = engine.score_chat_choices(messages or (), choices)
        result["text"] = result["best"].strip()
        result["finish_reason"] = "stop"
        result["choice_logprobs"] = result["logprobs"]
        return result
    kwargs: dict[str, Any] = {"stop": (stop,) if isinstance(stop, str) else tuple(stop), "grammar": grammar,
                              "max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    if prompt is not None:
        result = engine.complete(prompt, **kwargs)
    else:
        result = engine.chat(messages or (), **kwargs)
    result["choice_logprobs"] = None
    return result


class LocalBackend:
    """The embedded model behind an ``LM("local/<name>")``: ``complete(request) -> Completion``.

    `options` are the LM's extra kwargs; a local model reads ``stop`` (used when the request has none)
    and ``max_completion_tokens`` (used when neither the request nor the LM sets ``max_tokens``). The
    GGUF file is resolved on the first call (a missing model is a `ConfigurationError` then).
    """

    def __init__(self, model: str, options: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self._options: Mapping[str, Any] = options if options is not None else {}
        self._engine: LocalEngine | None = None

    @property
    def engine(self) -> LocalEngine:
        """The process's engine for this model (resolved once per backend, loaded on first use)."""
        if self._engine is None:
            self._engine = get_engine(resolve_model_path(self.model))
        return self._engine

    def complete(self, request: LMRequest) -> Completion:
        """Run `request` (with the LM's defaults already filled in) and return its completion."""
        max_tokens = request.max_tokens
        if max_tokens is None:
            max_tokens = self._options.get("max_completion_tokens")
        result = run_on_engine(
            self.engine, prompt=request.prompt, messages=request.messages, choices=request.choices,
            stop=request.stop or self._options.get("stop") or (), grammar=request.grammar or None,
            max_tokens=max_tokens, temperature=request.temperature, seed=sampling_seed(request),
        )
        usage = Usage(calls=1, prompt_tokens=int(result["prompt_tokens"]),
                      completion_tokens=int(result["completion_tokens"]),
                      reused_prompt_tokens=int(result["reused_prompt_tokens"] or 0))
        logprobs = result["choice_logprobs"]
        return Completion(text=str(result["text"]), model=self.model, usage=usage,
                          choice_logprobs=dict(logprobs) if logprobs is not None else None,
                          finish_reason=str(result["finish_reason"]))

    def price(self, prompt_tokens: int, completion_tokens: int) -> float:
        """A local model costs nothing."""
        return 0.0

    def context_window(self) -> int | None:
        """The engine's context size (the model is loaded to read it)."""
        return self.engine.n_ctx

    def count_prompt_tokens(self, request: LMRequest) -> int:
        """The exact prompt length of `request` in the model's tokens (the chat template included)."""
        engine = self.engine
        if request.prompt is not None:
            return engine.count_tokens(request.prompt)
        return len(engine.tokenize(engine.render_chat(request.messages or ()), special=True))
