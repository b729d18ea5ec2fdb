"""The litellm custom provider ``local``: ``litellm.completion(model="local/smollm2-135m", ...)``.

A thin shim for people who call litellm themselves; honing's own `LM("local/...")` does not come this
way (it calls the engine through `honing.lm.local.backend.LocalBackend`, without litellm).

`register_local_provider` registers the provider with litellm. `litellm_kwargs` turns an `LMRequest` into
the kwargs of that call: beyond litellm's own fields, ``honing_raw_prompt`` (complete the one message's
text as is, no chat template), ``honing_grammar`` and ``honing_choices``, which litellm passes to the
provider untouched in ``optional_params``. `completion_extras` reads back what the response carries
beyond text and usage (choice log-probabilities, reused prompt tokens); `complete_local` does the whole
round trip. The provider runs requests with `honing.lm.local.backend.run_on_engine`, as `LM` does; an
engine error is raised as litellm's `BadRequestError` (or `ContextWindowExceededError`), with the honing
error as its ``__cause__``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from honing.errors import HoningError, LMError
from honing.lm.litellm_loader import import_litellm
from honing.lm.local.backend import run_on_engine, sampling_seed
from honing.lm.local.engine import _ContextOverflow, get_engine
from honing.lm.local.models import PROVIDER as _PROVIDER
from honing.lm.local.models import local_model_name, resolve_model_path
from honing.lm.types import Completion, LMRequest, Usage

__all__ = ["complete_local", "completion_extras", "litellm_kwargs", "register_local_provider"]

# Names of the extra `litellm.completion` kwargs understood by the provider. litellm passes unknown
# kwargs of a custom provider through to `CustomLLM.completion(optional_params=...)` untouched.
_K_RAW_PROMPT = "honing_raw_prompt"
_K_GRAMMAR = "honing_grammar"
_K_CHOICES = "honing_choices"
_HIDDEN_KEY = "honing_local"

_provider_lock = threading.Lock()
_provider: Any = None


def _run_request(model: str, messages: Sequence[Mapping[str, Any]],
                 params: Mapping[str, Any]) -> dict[str, Any]:
    """Run one provider call on the engine; returns the engine's result dict plus ``choice_logprobs``."""
    engine = get_engine(resolve_model_path(model))
    msgs = [{"role": str(m["role"]), "content": _message_text(m.get("content"))} for m in messages]
    prompt = None
    if params.get(_K_RAW_PROMPT):
        if len(msgs) != 1:
            raise LMError(f"a raw-prompt request carries its prompt as one message, got {len(msgs)}")
        prompt = msgs[0]["content"]
    return run_on_engine(
        engine, prompt=prompt, messages=msgs, choices=params.get(_K_CHOICES) or (),
        stop=params.get("stop") or (), grammar=params.get(_K_GRAMMAR) or None,
        max_tokens=params.get("max_tokens", params.get("max_completion_tokens")),
        temperature=params.get("temperature"), seed=params.get("seed"),
    )


def _message_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return str(content)


def _make_provider_class(litellm: Any) -> type:
    from litellm import CustomLLM

    class HoningLocalLLM(CustomLLM):  # type: ignore[misc, valid-type]
        """litellm provider ``local/<model>``: runs the request on the embedded llama.cpp engine."""

        def completion(self, model: str, messages: list, api_base: str | None = None,
                       custom_prompt_dict: dict | None = None, model_response: Any = None,
                       print_verbose: Any = None, encoding: Any = None, api_key: Any = None,
                       logging_obj: Any = None, optional_params: dict | None = None,
                       acompletion: Any = None, litellm_params: Any = None, logger_fn: Any = None,
                       headers: Any = None, timeout: Any = None, client: Any = None) -> Any:
            params = dict(optional_params or {})
            try:
                result = _run_request(model, messages, params)
            except _ContextOverflow as exc:
                raise litellm.ContextWindowExceededError(str(exc), model=model,
                                                         llm_provider=_PROVIDER) from exc
            except (HoningError, ValueError) as exc:
                # litellm re-raises its own exception types untouched (others become APIConnectionError,
                # which reads as retryable); the honing error stays reachable as `__cause__`.
                raise litellm.BadRequestError(str(exc), model=model, llm_provider=_PROVIDER) from exc
            response = model_response if model_response is not None else litellm.ModelResponse()
            response.model = f"{_PROVIDER}/{local_model_name(model)}"
            choice = response.choices[0]
            choice.message.content = result["text"]
            choice.finish_reason = result["finish_reason"]
            response.usage = litellm.Usage(  # type: ignore[attr-defined]
                prompt_tokens=result["prompt_tokens"],
                completion_tokens=result["completion_tokens"],
                total_tokens=result["prompt_tokens"] + result["completion_tokens"],
            )
            response._hidden_params[_HIDDEN_KEY] = {
                "choice_logprobs": result["choice_logprobs"],
                "reused_prompt_tokens": result["reused_prompt_tokens"],
            }
            return response

        async def acompletion(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            return await asyncio.to_thread(self.completion, *args, **kwargs)

    return HoningLocalLLM


def register_local_provider() -> None:
    """Register the ``local`` provider with litellm (idempotent, thread-safe)."""
    global _provider
    litellm = import_litellm()
    with _provider_lock:
        if _provider is None:
            _provider = _make_provider_class(litellm)()
        entries = [e for e in litellm.custom_provider_map if e.get("provider") == _PROVIDER]
        if not entries or entries[-1].get("custom_handler") is not _provider:
            litellm.custom_provider_map = [
                e for e in litellm.custom_provider_map if e.get("provider") != _PROVIDER
            ] + [{"provider": _PROVIDER, "custom_handler": _provider}]
        # litellm.completion also runs this on every call; doing it now makes the provider known at once.
        from litellm.utils import custom_llm_setup

        custom_llm_setup()


def litellm_kwargs(request: LMRequest, model: str | None = None) -> dict[str, Any]:
    """The kwargs of ``litellm.completion`` for `request` on a local model.

    A prompt request travels as one user message plus ``honing_raw_prompt=True`` (the provider then
    completes the text as is, no chat template); a messages request is rendered with the model's chat
    template. ``honing_grammar`` and ``honing_choices`` carry the grammar and the choices; litellm passes
    these unknown kwargs to the provider in ``optional_params``. With `model` (``"smollm2-135m"`` or
    ``"local/smollm2-135m"``), the ``model`` kwarg is included too. `response_format` is not sent (the
    local provider cannot use it). The seed is `sampling_seed(request)`: a sampled request without a
    `seed` is seeded by its `rollout`, as on `LM`'s own path.
    """
    kwargs: dict[str, Any] = {}
    if model is not None:
        kwargs["model"] = f"{_PROVIDER}/{local_model_name(model)}"
    if request.prompt is not None:
        kwargs["messages"] = [{"role": "user", "content": request.prompt}]
        kwargs[_K_RAW_PROMPT] = True
    else:
        kwargs["messages"] = [dict(m) for m in request.messages or ()]
    if request.stop:
        kwargs["stop"] = list(request.stop)
    if request.max_tokens is not None:
        kwargs["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        kwargs["temperature"] = request.temperature
    seed = sampling_seed(request)
    if seed is not None:
        kwargs["seed"] = seed
    if request.grammar is not None:
        kwargs[_K_GRAMMAR] = request.grammar
    if request.choices:
        kwargs[_K_CHOICES] = list(request.choices)
    return kwargs


def completion_extras(response: Any) -> dict[str, Any]:
    """What a local-provider litellm response carries beyond text and usage.

    ``{"choice_logprobs": {choice: logprob} | None, "reused_prompt_tokens": int}``, read from the
    response's ``_hidden_params`` (which survive litellm's post-processing). Any other response gives
    ``{"choice_logprobs": None, "reused_prompt_tokens": 0}``.
    """
    hidden = getattr(response, "_hidden_params", None) or {}
    extras = hidden.get(_HIDDEN_KEY) if isinstance(hidden, Mapping) else None
    if not isinstance(extras, Mapping):
        return {"choice_logprobs": None, "reused_prompt_tokens": 0}
    logprobs = extras.get("choice_logprobs")
    return {
        "choice_logprobs": dict(logprobs) if logprobs is not None else None,
        "reused_prompt_tokens": int(extras.get("reused_prompt_tokens") or 0),
    }


def complete_local(model: str, request: LMRequest) -> Completion:
    """Run `request` on a local model through litellm (the shim) and return a `Completion`."""
    register_local_provider()
    litellm = import_litellm()
    name = f"{_PROVIDER}/{local_model_name(model)}"
    response = litellm.completion(**litellm_kwargs(request, model=name))
    extras = completion_extras(response)
    usage = getattr(response, "usage", None)
    choice = response.choices[0]
    return Completion(
        text=choice.message.content or "",
        model=name,
        usage=Usage(
            calls=1,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            reused_prompt_tokens=extras["reused_prompt_tokens"],
        ),
        choice_logprobs=extras["choice_logprobs"],
        finish_reason=choice.finish_reason,
    )
