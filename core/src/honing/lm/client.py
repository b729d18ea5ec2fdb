"""`LM`: one language model, with a disk cache, budgets, retries, usage and history.

    lm = LM("openai/gpt-4o-mini")                      # key from OPENAI_API_KEY
    lm = LM("local/smollm2-135m")                      # the embedded llama.cpp model
    completion = lm(LMRequest(messages=[{"role": "user", "content": "Hi"}]))

A call goes: cache lookup (a hit costs nothing and is counted in `usage.cache_hits`) -> API key check ->
budget reservation (refused calls are not sent) -> the LM's `Backend` (`honing.lm.backend`) -> retries
with backoff on 429/5xx/timeouts/connection errors -> usage, history, cache write. The backend of a
hosted model is ``litellm.completion`` (with litellm's own retries off); that of a ``local/...`` model
is the embedded engine, called directly (`honing.lm.local.backend.LocalBackend`), without litellm.

The API key lives in a `Secret` and is passed to litellm only; it never appears in `repr(lm)`, in
errors honing raises (litellm's messages are scrubbed), in logs, history, the cache, or `to_state()`.
"""

from __future__ import annotations

import collections
import difflib
import logging
import random
import threading
import time
from collections.abc import Mapping
from typing import Any

import attrs

from honing import settings as _settings
from honing.errors import ConfigurationError, HoningError, LMError
from honing.lm.backend import Backend
from honing.lm.budget import Budget, effective_budgets, reserve_all
from honing.lm.cache import DiskCache, cache_key, get_default_cache
from honing.lm.litellm_loader import import_litellm
from honing.lm.retry import RetryPolicy, is_retryable, retry_after_from, status_code_of
from honing.lm.secrets import Secret, install_log_scrubbing, is_secret_name, safe_url, scrub, without_secrets
from honing.lm.types import Completion, LMRequest, Usage
from honing.lm.usage import report_usage

logger = logging.getLogger("honing.lm")

LOCAL_PROVIDER = "local"
#: Completion-length guess for budget reservations when neither the request nor the LM sets max_tokens.
DEFAULT_MAX_TOKENS_ESTIMATE = 1000
#: Options honing consumes itself (never sent to litellm, not part of the cache key).
_HONING_OPTIONS = {"retry_base": 0.5, "retry_cap": 30.0, "max_retry_after": 120.0}
#: Options that change nothing about the output (not part of the cache key).
_NON_OUTPUT_OPTIONS = frozenset({"timeout", "num_retries", "max_retries", "stream", "metadata",
                                 "drop_params", "mock_response", "logger_fn", "verbose"})
_SHOWN_PROVIDERS = ("openai", "anthropic", "gemini", "vertex_ai", "azure", "bedrock", "mistral", "groq",
                    "together_ai", "ollama", "openrouter", "deepseek", LOCAL_PROVIDER)

#: Providers known without importing litellm (all are in ``litellm.provider_list``): an LM for one of
#: them can be built, and answer from the cache, before litellm (slow to import) is loaded.
_WELL_KNOWN_PROVIDERS = frozenset({
    "openai", "anthropic", "gemini", "vertex_ai", "azure", "bedrock", "mistral", "groq", "together_ai",
    "ollama", "ollama_chat", "openrouter", "deepseek", "cohere", "huggingface", "xai", "fireworks_ai",
    "perplexity", "hosted_vllm", "lm_studio", LOCAL_PROVIDER,
})

def known_providers() -> set[str]:
    """Provider prefixes litellm knows, plus the custom ones registered with it and ``local``."""
    litellm = import_litellm()
    names = {getattr(p, "value", str(p)) for p in getattr(litellm, "provider_list", ())}
    for item in getattr(litellm, "custom_provider_map", None) or ():
        provider = item.get("provider") if isinstance(item, dict) else None
        if provider:
            names.add(provider)
    names.add(LOCAL_PROVIDER)
    return names


def _provider_of(model: str) -> str:
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(f"an LM needs a model name like 'openai/gpt-4o-mini', got {model!r}")
    if "/" in model and model.split("/", 1)[0] in _WELL_KNOWN_PROVIDERS:
        return model.split("/", 1)[0]
    known = known_providers()
    if "/" in model:
        provider = model.split("/", 1)[0]
        if provider in known:
            return provider
    else:
        provider = model
        try:  # a bare name such as "gpt-4o-mini": let litellm say whose it is
            _, inferred, _, _ = import_litellm().get_llm_provider(model=model)
            if inferred:
                return str(inferred)
        except Exception as exc:  # noqa: BLE001 - any failure means "unknown"
            logger.debug("litellm does not know the provider of %r: %s", model, type(exc).__name__)
    shown = [p for p in _SHOWN_PROVIDERS if p in known]
    close = difflib.get_close_matches(provider, sorted(known), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigurationError(
        f"unknown LM provider {provider!r} in model {model!r}: the model must be 'provider/name' with a "
        f"provider such as {', '.join(shown)} (litellm knows {len(known)}; see litellm.provider_list).{hint}"
    )


#: Not read yet (None is a valid "unknown" answer).
_UNKNOWN = object()


class LM:
    """A language model: ``lm(request) -> Completion``. See the module docstring.

    - `model`: ``"provider/name"``.
    - `api_key`: the provider key (else litellm reads the provider's env var); `api_base`: endpoint URL.
    - `temperature`, `max_tokens`: defaults for requests that do not set them.
    - `num_retries`: retries after the first attempt on transient failures (kwargs `retry_base`,
      `retry_cap` set the backoff, in seconds; `max_retry_after` caps how long a Retry-After is honoured).
    - `cache`: True (the default disk cache), False, or a `DiskCache`.
    - `budget`: a `Budget` every call of this LM is charged to (as is ``settings.current().budget``).
    - `timeout`: seconds per attempt; `history_size`: how many calls `history` keeps.
    - other kwargs go to ``litellm.completion`` (and, unless they are credentials, into the cache key).
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str | Secret | None = None,
        api_base: str | None = None,
        temperature: float | None = 0.0,
        max_tokens: int | None = None,
        num_retries: int = 5,
        cache: bool | DiskCache = True,
        budget: Budget | None = None,
        timeout: float | None = 60.0,
        history_size: int = 1000,
        **kwargs: Any,
    ) -> None:
        install_log_scrubbing()
        self.model = model
        self._provider = _provider_of(model)
        self._api_key = Secret(api_key) if api_key is not None else None
        self.api_base = api_base
        self.temperature = temperature
        self.max_tokens = max_tokens
        if num_retries < 0:
            raise ValueError(f"num_retries must be >= 0, got {num_retries}")
        self.num_retries = int(num_retries)
        self.timeout = timeout
        self.history_size = int(history_size)
        self._honing_options = {k: float(kwargs.pop(k, default)) for k, default in _HONING_OPTIONS.items()}
        self.retry_policy = RetryPolicy(num_retries=self.num_retries, base=self._honing_options["retry_base"],
                                        cap=self._honing_options["retry_cap"],
                                        max_retry_after=self._honing_options["max_retry_after"])
        # credentials passed as kwargs (extra_headers, aws_secret_access_key, ...) are kept apart
        self._secret_kwargs = {k: v for k, v in kwargs.items() if is_secret_name(k) or isinstance(v, Secret)}
        self._scrub_extra = [Secret(v) for v in _strings_in(self._secret_kwargs.values())]
        self.kwargs = {k: v for k, v in kwargs.items() if k not in self._secret_kwargs}
        if cache is True:
            self._cache: DiskCache | None = get_default_cache()
        elif cache is False or cache is None:
            self._cache = None
        elif isinstance(cache, DiskCache):
            self._cache = cache
        else:
            raise TypeError(f"cache must be True, False or a DiskCache, not {type(cache).__name__}")
        if budget is not None and not isinstance(budget, Budget):
            raise TypeError(f"budget must be a honing Budget, not {type(budget).__name__}")
        self.budget = budget
        self._lock = threading.Lock()
        self._usage = Usage()
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=self.history_size)
        self._key_checked = False
        self._backend_instance: Backend | None = None  # made on the first call (see `_backend`)
        self._context_window: object = _UNKNOWN  # read once (see `context_window`)
        self._rng = random.Random()

    # --- description ---------------------------------------------------------------------------------

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def is_local(self) -> bool:
        return self._provider == LOCAL_PROVIDER

    @property
    def supports_choice_scoring(self) -> bool:
        return self.is_local

    @property
    def supports_grammar(self) -> bool:
        return self.is_local

    @property
    def supports_response_schema(self) -> bool:
        if self.is_local:
            return False
        try:
            return bool(import_litellm().supports_response_schema(model=self.model))
        except Exception:  # noqa: BLE001 - unknown model: assume not
            return False

    @property
    def context_window(self) -> int | None:
        """Tokens this model reads at most (prompt plus completion), or None when unknown: the embedded
        engine's context size, else litellm's model map entry."""
        if self._context_window is _UNKNOWN:
            self._context_window = self._backend.context_window()
        return self._context_window  # type: ignore[return-value]

    @property
    def exact_token_counts(self) -> bool:
        """Whether `count_tokens` uses the model's own tokenizer (the embedded model) rather than
        litellm's estimate (hosted models)."""
        return self.is_local

    def count_tokens(self, request: LMRequest | str) -> int:
        """The prompt tokens of `request`: exact for the embedded model, litellm's count (or, failing that,
        a characters/4 estimate) for hosted ones."""
        if isinstance(request, str):
            request = LMRequest(prompt=request)
        return self._count_prompt_tokens(request)

    @property
    def usage(self) -> Usage:
        """Everything this LM spent so far (calls sent, tokens, cost, cache hits)."""
        with self._lock:
            return self._usage

    @property
    def cache(self) -> DiskCache | None:
        return self._cache

    def __repr__(self) -> str:
        parts = [repr(self.model)]
        if self.api_base and safe_url(self.api_base):
            parts.append(f"api_base={self.api_base!r}")
        elif self.api_base:
            parts.append("api_base='***'")
        parts.append(f"temperature={self.temperature!r}")
        if self.max_tokens is not None:
            parts.append(f"max_tokens={self.max_tokens!r}")
        parts.append(f"cache={self._cache is not None}")
        if self.budget is not None:
            parts.append(f"budget={self.budget!r}")
        return scrub(f"LM({', '.join(parts)})", self._all_secrets())

    # --- state ---------------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """The LM's configuration as JSON-able data, without credentials (see `from_state`)."""
        state: dict[str, Any] = {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "num_retries": self.num_retries,
            "cache": self._cache is not None,
            "timeout": self.timeout,
            "history_size": self.history_size,
            "kwargs": {**without_secrets(self.kwargs),
                       **{k: v for k, v in self._honing_options.items() if v != _HONING_OPTIONS[k]}},
        }
        if self.api_base and safe_url(self.api_base):
            state["api_base"] = self.api_base
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], **overrides: Any) -> LM:
        """Rebuild an LM from `to_state()`; `overrides` (e.g. ``api_key=``) win. The key otherwise comes
        from the environment, as litellm reads it."""
        state = dict(state)
        kwargs = dict(state.pop("kwargs", None) or {})
        model = overrides.pop("model", state.pop("model", None))
        if model is None:
            raise ConfigurationError("an LM state needs a 'model'")
        args = {k: state[k] for k in ("api_base", "temperature", "max_tokens", "num_retries", "cache",
                                      "timeout", "history_size") if k in state}
        args.update(kwargs)
        args.update(overrides)
        return cls(model, **args)

    def copy(self, **overrides: Any) -> LM:
        """A new LM with the same configuration and `overrides`; it shares the cache (and the budget
        object, which is a limit set from outside) but has its own usage and history."""
        args: dict[str, Any] = {
            "api_key": self._api_key,
            "api_base": self.api_base,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "num_retries": self.num_retries,
            "cache": self._cache if self._cache is not None else False,
            "budget": self.budget,
            "timeout": self.timeout,
            "history_size": self.history_size,
            **self._honing_options,
            **self.kwargs,
            **self._secret_kwargs,
        }
        args.update(overrides)
        model = args.pop("model", self.model)
        return type(self)(model, **args)

    def __deepcopy__(self, memo: dict[int, Any]) -> LM:
        # an LM is a handle on a service (its usage, cache and budget are shared accounting): programs
        # that are deep-copied keep using the same LM
        return self

    def __getstate__(self) -> Any:
        raise TypeError("an LM is not pickled (it holds an API key); save lm.to_state() and use "
                        "LM.from_state(state, api_key=...)")

    # --- calls ---------------------------------------------------------------------------------------

    def __call__(self, request: LMRequest | str) -> Completion:
        return self.complete(request)

    def complete(self, request: LMRequest | str) -> Completion:
        """Answer `request` (a bare string is one user message), from the cache if it can."""
        if isinstance(request, str):
            request = LMRequest(messages=[{"role": "user", "content": request}])
        if not isinstance(request, LMRequest):
            raise TypeError(f"an LM takes an LMRequest, not {type(request).__name__}")
        if request.choices and not self.is_local:
            raise ConfigurationError(
                f"choice scoring needs a local model; {self.model!r} is a hosted ({self.provider}) model")
        budgets = effective_budgets(self.budget, _settings.current().budget)

        key = self._cache_key(request) if self._cache is not None else None
        if key is not None and self._cache is not None:
            hit = self._cache.get(key)
            if hit is not None:
                try:
                    completion = Completion.from_dict(hit, cached=True)
                except (KeyError, TypeError, ValueError):
                    completion = None
                if completion is not None:
                    usage = Usage(cache_hits=1)
                    for b in budgets:
                        b.charge(usage)
                    self._account(usage)
                    self._remember(request, completion, usage)
                    logger.debug("lm %s: %d prompt + %d completion tokens, cached=True", self.model,
                                 completion.usage.prompt_tokens, completion.usage.completion_tokens)
                    return completion

        completion = self._send(request, budgets)
        if key is not None and self._cache is not None:
            self._cache.put(key, completion.to_dict())
        return completion

    def _send(self, request: LMRequest, budgets: list[Budget]) -> Completion:
        self._check_api_key()
        backend = self._backend
        effective = self._effective(request)
        tokens_estimate, cost_estimate = self._estimate(request) if budgets else (0, 0.0)
        retries = 0 if self.is_local else self.num_retries  # local failures are not transient
        attempt = 0
        while True:
            reservations = reserve_all(budgets, calls=1, tokens=tokens_estimate, cost=cost_estimate)
            try:
                completion = backend.complete(effective)
            except Exception as exc:  # noqa: BLE001 - mapped to honing errors below
                for r in reservations:
                    r.budget.release(r, sent=True)
                self._account(Usage(calls=1))
                error = self._map_error(exc, attempt)
                if isinstance(error, LMError) and error.retryable and attempt < retries:
                    wait = self.retry_policy.delay(attempt, retry_after_from(exc), self._rng)
                    logger.debug("lm %s: attempt %d failed (%s); retrying in %.2fs", self.model, attempt + 1,
                                 error.status_code, wait)
                    time.sleep(wait)
                    attempt += 1
                    continue
                raise error from None
            except BaseException:
                for r in reservations:
                    r.budget.release(r, sent=True)
                raise
            for r in reservations:
                r.budget.settle(r, completion.usage)
            self._account(completion.usage)
            self._remember(request, completion, completion.usage)
            logger.debug("lm %s: %d prompt + %d completion tokens, cached=False", self.model,
                         completion.usage.prompt_tokens, completion.usage.completion_tokens)
            return completion

    # --- pieces of a call ----------------------------------------------------------------------------

    @property
    def _backend(self) -> Backend:
        """Where this LM's requests go: the embedded engine for ``local/...``, else litellm."""
        backend = self._backend_instance
        if backend is None:
            backend = _local_backend(self.model, self.kwargs) if self.is_local else _LiteLLMBackend(self)
            self._backend_instance = backend
        return backend

    def _effective(self, request: LMRequest) -> LMRequest:
        """`request` with the LM's defaults filled in."""
        return attrs.evolve(
            request,
            temperature=request.temperature if request.temperature is not None else self.temperature,
            max_tokens=request.max_tokens if request.max_tokens is not None else self.max_tokens,
        )

    def _cache_key(self, request: LMRequest) -> str:
        params = {k: v for k, v in without_secrets(self.kwargs).items() if k not in _NON_OUTPUT_OPTIONS}
        return cache_key({
            "model": self.model,
            "request": request_dict(request),
            "params": {"temperature": self.temperature, "max_tokens": self.max_tokens, **params},
        })

    def _missing_key_env(self) -> str | None:
        """The env var(s) a hosted provider needs when no key was passed and the env has none, else None."""
        if self.is_local or self._api_key is not None:
            return None
        if any(k in self._secret_kwargs for k in ("api_key", "api_token", "azure_ad_token")):
            return None
        try:
            env = import_litellm().validate_environment(model=self.model)
        except Exception:  # noqa: BLE001 - cannot tell: let the provider decide
            return None
        missing = [k for k in env.get("missing_keys") or () if str(k).endswith("_API_KEY")]
        if env.get("keys_in_environment") or not missing:
            return None
        return " or ".join(missing)

    def _check_api_key(self) -> None:
        if self._key_checked or self.api_base is not None:  # a custom endpoint may need no key
            return
        missing = self._missing_key_env()
        if missing:
            raise ConfigurationError(
                f"no API key for {self.model!r}: pass LM({self.model!r}, api_key=...) or set {missing}")
        self._key_checked = True

    def _estimate(self, request: LMRequest) -> tuple[int, float]:
        """Tokens (prompt + completion allowance) and dollars to reserve for `request`."""
        prompt_tokens = self._count_prompt_tokens(request)
        if request.choices:
            completion_tokens = sum(len(c) // 4 + 1 for c in request.choices)
        else:
            completion_tokens = request.max_tokens or self.max_tokens or DEFAULT_MAX_TOKENS_ESTIMATE
        return prompt_tokens + completion_tokens, self._backend.price(prompt_tokens, completion_tokens)

    def _count_prompt_tokens(self, request: LMRequest) -> int:
        try:
            return int(self._backend.count_prompt_tokens(request))
        except Exception:  # noqa: BLE001 - no tokenizer: a rough estimate is enough for a reservation
            return len(request.text()) // 4 + 1

    def _all_secrets(self) -> list[Secret]:
        return [s for s in (self._api_key, *self._scrub_extra) if s is not None]

    def _map_error(self, exc: BaseException, attempt: int) -> Exception:
        """A honing error for `exc`, with every key scrubbed from its message."""
        if isinstance(exc, HoningError):  # the backend's own error (the local engine's), as it is
            return exc
        if isinstance(exc.__cause__, HoningError):  # a honing error wrapped by litellm
            return exc.__cause__
        status = status_code_of(exc)
        message = scrub(f"{type(exc).__name__}: {exc}", self._all_secrets())
        if isinstance(exc, _MalformedResponse):
            return LMError(f"{self.model}: {message}", status_code=None, retryable=True)
        if not self.is_local and (isinstance(exc, import_litellm().AuthenticationError) or status == 401):
            missing = self._missing_key_env()
            if missing:
                return ConfigurationError(
                    f"no API key for {self.model!r}: pass LM({self.model!r}, api_key=...) or set {missing} "
                    f"(the provider said: {message})")
        retryable = is_retryable(exc)
        attempts = attempt + 1
        what = f" with HTTP {status}" if status is not None else ""
        tail = f" after {attempts} attempts" if attempts > 1 else ""
        return LMError(f"{self.model}: request failed{what}{tail}: {message}", status_code=status,
                       retryable=retryable)

    def _account(self, usage: Usage) -> None:
        with self._lock:
            self._usage = self._usage + usage
        report_usage(usage)

    def _remember(self, request: LMRequest, completion: Completion, usage: Usage) -> None:
        entry = {
            "timestamp": time.time(),
            "model": self.model,
            "request": request_dict(request),
            "response": completion.text,
            "usage": usage.to_dict(),
            "cached": completion.cached,
        }
        if completion.choice_logprobs is not None:
            entry["choice_logprobs"] = dict(completion.choice_logprobs)
        with self._lock:
            self.history.append(entry)

    def reset_usage(self) -> None:
        """Forget this LM's usage and history (the cache and budgets are untouched)."""
        with self._lock:
            self._usage = Usage()
            self.history.clear()


def request_dict(request: LMRequest) -> dict[str, Any]:
    """`request.to_dict()`: the set fields as JSON-able data (lists for tuples)."""
    return request.to_dict()


class _MalformedResponse(Exception):
    """The provider answered 200 with something that is not a completion (retryable)."""


def _strings_in(values: Any) -> list[str]:
    out: list[str] = []
    for v in values:
        if isinstance(v, Secret):
            out.append(v.reveal())
        elif isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            out.extend(_strings_in(v.values()))
        elif isinstance(v, (list, tuple)):
            out.extend(_strings_in(v))
    return [s for s in out if len(s) >= 8]


def _local_backend(model: str, options: Mapping[str, Any]) -> Backend:
    try:
        from honing.lm.local.backend import LocalBackend
    except ImportError as exc:
        raise ConfigurationError(
            f"the local provider is not available ({exc}); install honing[local] (llama-cpp-python)"
        ) from None
    return LocalBackend(model, options)


class _LiteLLMBackend:
    """The `Backend` of a hosted model: one ``litellm.completion`` per call.

    It reads the LM's settings at every call (so a changed ``lm.api_base`` applies), reveals the LM's
    credentials to litellm only, and turns litellm's response into a `Completion` with its cost.
    """

    def __init__(self, lm: LM) -> None:
        self._lm = lm
        self._cost_known = True  # False once litellm said it has no price for this model

    def complete(self, request: LMRequest) -> Completion:
        response = import_litellm().completion(**self.kwargs(request))
        return self._to_completion(request, response)

    def kwargs(self, request: LMRequest) -> dict[str, Any]:
        """The kwargs of ``litellm.completion`` for `request` (the LM's defaults already filled in)."""
        lm = self._lm
        if request.grammar:
            logger.debug("lm %s: grammar ignored (only local models use it)", lm.model)
        messages = (list(request.messages) if request.messages is not None
                    else [{"role": "user", "content": request.prompt}])
        kwargs = {"model": lm.model, "messages": [dict(m) for m in messages]}
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.response_format is not None:
            kwargs["response_format"] = request.response_format
        kwargs.update(lm.kwargs)
        for k, v in lm._secret_kwargs.items():
            kwargs[k] = v.reveal() if isinstance(v, Secret) else v
        if lm.api_base is not None:
            kwargs["api_base"] = lm.api_base
        if lm._api_key is not None:
            kwargs["api_key"] = lm._api_key.reveal()
        if lm.timeout is not None:
            kwargs["timeout"] = lm.timeout
        kwargs["num_retries"] = 0
        kwargs["max_retries"] = 0  # the OpenAI SDK retries twice by default
        return kwargs

    def count_prompt_tokens(self, request: LMRequest) -> int:
        litellm = import_litellm()
        if request.messages is not None:
            messages = [dict(m) for m in request.messages]
            return int(litellm.token_counter(model=self._lm.model, messages=messages))
        return int(litellm.token_counter(model=self._lm.model, text=request.prompt))

    def context_window(self) -> int | None:
        """litellm's model map entry (max input tokens), or None for a model it does not know."""
        try:
            info = import_litellm().get_model_info(model=self._lm.model)
        except Exception:  # noqa: BLE001 - unknown (e.g. self-hosted) model
            return None
        window = info.get("max_input_tokens") or info.get("max_tokens")
        return int(window) if window else None

    def price(self, prompt_tokens: int, completion_tokens: int) -> float:
        if not self._cost_known:
            return 0.0
        try:
            prompt_cost, completion_cost = import_litellm().cost_per_token(
                model=self._lm.model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
            return float(prompt_cost) + float(completion_cost)
        except Exception:  # noqa: BLE001 - not in litellm's price map
            self._cost_known = False
            return 0.0

    def _cost_of(self, response: Any, usage: Usage) -> float:
        if not self._cost_known:
            return 0.0
        hidden = getattr(response, "_hidden_params", None) or {}
        cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
        if isinstance(cost, (int, float)) and cost >= 0:
            return float(cost)
        try:
            return float(import_litellm().completion_cost(completion_response=response, model=self._lm.model)
                         or 0.0)
        except Exception:  # noqa: BLE001 - not in litellm's price map
            return self.price(usage.prompt_tokens, usage.completion_tokens)

    def _to_completion(self, request: LMRequest, response: Any) -> Completion:
        try:
            choice = response.choices[0]
            message = getattr(choice, "message", None)
            text = getattr(message, "content", None) if message is not None else getattr(choice, "text", None)
            finish_reason = getattr(choice, "finish_reason", None)
        except (AttributeError, IndexError, TypeError) as exc:
            raise _MalformedResponse(f"the reply has no choices ({type(exc).__name__})") from None
        text = "" if text is None else str(text)
        raw_usage = getattr(response, "usage", None)
        prompt_tokens = getattr(raw_usage, "prompt_tokens", None)
        completion_tokens = getattr(raw_usage, "completion_tokens", None)
        if not isinstance(prompt_tokens, int):
            prompt_tokens = self._lm._count_prompt_tokens(request)
        if not isinstance(completion_tokens, int):
            completion_tokens = len(text) // 4
        usage = Usage(calls=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        usage = attrs.evolve(usage, cost=self._cost_of(response, usage))
        return Completion(text=text, model=self._lm.model, usage=usage,
                          finish_reason=None if finish_reason is None else str(finish_reason))
