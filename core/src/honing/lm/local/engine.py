"""The embedded llama.cpp engine: `LocalEngine`, one per GGUF file per process (from `get_engine`).

The engine owns the llama.cpp context. Every call is serialised by the engine's lock and reuses the KV
cache for the longest token prefix it shares with what the context already holds (the previous call), so
a long shared prefix (instructions + demos) is evaluated once. It decodes (`complete`, `chat`, optionally
under a GBNF grammar) and scores closed choices (`score_choices`) without decoding.

Choice scoring convention: a choice is passed *exactly as the continuation text* of the prompt, e.g. the
prompt ends with ``"Intent:"`` and the choices are ``" card_arrival"``, ``" card_lost"``: the caller adds
the leading space. The engine appends a terminator (``"\\n"`` for raw prompts, the end-of-turn token for
chat prompts) so a choice that is a prefix of another one does not win by stopping early. If the prompt
ends with spaces or tabs they are moved to the front of every continuation before tokenising (as
lm-evaluation-harness does), so ``"Intent: "`` + ``"card_lost"`` is scored like ``"Intent:"`` +
``" card_lost"``.

Environment: ``HONING_LOCAL_N_CTX`` (context size, default 8192, capped at the model's training context),
``HONING_LOCAL_N_THREADS`` (default ``os.cpu_count()``). Before llama_cpp is first imported,
``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` (see `_import_llama_cpp`).
"""

from __future__ import annotations

import atexit
import ctypes
import math
import os
import pathlib
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from honing.errors import ConfigurationError, LMError

# See `_import_llama_cpp`: set as early as possible, since whoever imports llama_cpp first fixes it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: Generation length when a request sets no `max_tokens` (also capped by the free context).
DEFAULT_MAX_TOKENS = 512

_DEFAULT_N_CTX = 8192
_MAX_CACHED_GRAMMARS = 256
#: Sequences of the llama.cpp context: sequence 0 is the conversation, the others score choices in parallel.
_N_SEQ = 32


def _import_llama_cpp() -> Any:
    # llama-cpp-python's wheels use OpenMP. With the default (active) wait policy an idle worker spins,
    # and when the CPU is shared with other busy processes (parallel test runs, a compile) the threads
    # of one token keep waiting for a descheduled sibling: on 2 busy cores, generation fell from ~20 to
    # 0.5-6 tokens/s with 2 threads, and a test run took 10-20x longer; with the passive policy it
    # stays ~20. The policy is read once, when the OpenMP runtime loads, so it must be in the
    # environment (unless the user set it) before llama_cpp is first imported by anyone in the process.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "the local model needs llama-cpp-python; install it with: pip install 'honing[local]'"
        ) from exc
    return llama_cpp


def _env_int(name: str, default: int, minimum: int) -> int:
    """The integer setting `name` from the environment (`default` when unset or empty)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, got {value}")
    return value


def _requested_n_ctx() -> int:
    return _env_int("HONING_LOCAL_N_CTX", _DEFAULT_N_CTX, 64)


def _requested_n_threads() -> int:
    return _env_int("HONING_LOCAL_N_THREADS", os.cpu_count() or 1, 1)


class _ContextOverflow(LMError):
    """A prompt longer than the local model's context (the litellm shim raises ContextWindowExceededError)."""


def _log_softmax(logits: Any) -> Any:
    import numpy as np

    rows = np.asarray(logits, dtype=np.float64)
    shifted = rows - rows.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class LocalEngine:
    """One llama.cpp context for one GGUF file. Get it with `get_engine`; it loads on first use.

    All public methods take the engine's lock, so calls from many threads run one at a time and never
    see each other's KV cache state. Each call reuses the cached KV entries of the longest token prefix
    it shares with the tokens the context holds, and reports that count as ``reused_prompt_tokens``.

    Token counts in the returned dicts are exact (the model's own tokenizer): ``prompt_tokens`` is the
    length of the tokenised prompt, ``completion_tokens`` the number of generated tokens (the
    end-of-generation token is not counted, a token that completed a stop sequence is).
    """

    def __init__(self, path: str | os.PathLike[str], *, n_ctx: int | None = None,
                 n_threads: int | None = None, seed: int = 0) -> None:
        self.path = pathlib.Path(path)
        self._n_ctx_requested = n_ctx
        self.n_threads = n_threads or _requested_n_threads()
        self.seed = seed
        self._lock = threading.RLock()
        self._llama: Any = None
        self._llama_cpp: Any = None
        self._grammars: dict[str, Any] = {}
        self._chat_formatter: Any = None
        self._candidates: Any = None
        self._n_seq = 1

    # -- loading ------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    def _ensure_loaded(self) -> Any:
        if self._llama is not None:
            return self._llama
        with self._lock:
            if self._llama is None:
                self._llama = self._load()
        return self._llama

    def _load(self) -> Any:
        llama_cpp = _import_llama_cpp()
        self._llama_cpp = llama_cpp
        if not self.path.is_file():
            raise ConfigurationError(f"no GGUF model file at {str(self.path)!r}")
        n_ctx = self._n_ctx_requested or _requested_n_ctx()

        def make(ctx_size: int) -> Any:
            return llama_cpp.Llama(
                model_path=str(self.path), n_ctx=ctx_size, n_threads=self.n_threads,
                n_threads_batch=self.n_threads, logits_all=False, verbose=False, seed=self.seed,
            )

        try:
            llama = make(n_ctx)
            n_train = llama._model.n_ctx_train()
            if 0 < n_train < n_ctx:
                # The model was trained on a shorter context: do not extrapolate past it.
                llama.close()
                llama = make(n_train)
        except ValueError as exc:
            raise LMError(f"could not load the local model {str(self.path)!r}: {exc}") from exc
        self._n_seq = self._enable_parallel_sequences(llama)
        return llama

    @staticmethod
    def _enable_parallel_sequences(llama: Any) -> int:
        """Recreate the context with `_N_SEQ` sequences over one unified KV cache; return the count.

        `Llama` always makes a one-sequence context. With several sequences sharing the cache, all the
        choices of `score_choices` are evaluated in one batch on top of a single copy of the prompt
        (`llama_memory_seq_cp` only tags the prompt's cells with the other sequence ids). Falls back to
        one sequence (choices then go one after the other) if llama.cpp refuses.
        """
        import contextlib

        from llama_cpp import _internals

        llama_cpp = _import_llama_cpp()
        n_seq = min(_N_SEQ, int(llama_cpp.llama_max_parallel_sequences()))
        if n_seq <= 1:
            return 1
        params = llama.context_params
        old_n_seq, old_unified = params.n_seq_max, params.kv_unified
        llama._ctx.close()  # free the first context's KV cache before allocating the new one
        params.n_seq_max, params.kv_unified = n_seq, True
        try:
            ctx = _internals.LlamaContext(model=llama._model, params=params, verbose=False)
        except ValueError:
            params.n_seq_max, params.kv_unified = old_n_seq, old_unified
            ctx = _internals.LlamaContext(model=llama._model, params=params, verbose=False)
            n_seq = 1
        llama._ctx = llama._stack.enter_context(contextlib.closing(ctx))
        llama.n_tokens = 0
        return n_seq

    def close(self) -> None:
        """Free the llama.cpp context (the engine reloads on its next use)."""
        with self._lock:
            for parsed in self._grammars.values():
                self._llama_cpp.llama_sampler_free(parsed)
            self._grammars.clear()
            self._chat_formatter = None
            self._candidates = None
            if self._llama is not None:
                self._llama.close()
                self._llama = None

    # -- facts --------------------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return int(self._ensure_loaded().n_ctx())

    @property
    def n_vocab(self) -> int:
        return int(self._ensure_loaded().n_vocab())

    @property
    def cached_tokens(self) -> int:
        """How many tokens the KV cache currently holds (for tests and diagnostics)."""
        return int(self._llama.n_tokens) if self._llama is not None else 0

    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = True) -> list[int]:
        """The model's tokens for `text` (`add_bos` adds BOS only if the model asks for it)."""
        llama = self._ensure_loaded()
        return list(llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def detokenize(self, tokens: Sequence[int]) -> str:
        llama = self._ensure_loaded()
        return llama.detokenize(list(tokens)).decode("utf-8", errors="replace")

    # -- KV cache -----------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the KV cache (the next call evaluates its whole prompt)."""
        with self._lock:
            if self._llama is not None:
                self._llama._ctx.kv_cache_clear()
                self._llama.n_tokens = 0

    def _sync(self, tokens: Sequence[int], *, keep_last: bool) -> int:
        """Make the KV cache hold exactly `tokens`, reusing the longest prefix it already holds.

        With `keep_last`, the last token is always (re-)evaluated so its logits are fresh for sampling.
        Returns how many tokens were reused rather than evaluated.
        """
        import numpy as np

        llama = self._llama
        want = np.asarray(tokens, dtype=np.intc)
        have = llama.input_ids[: llama.n_tokens]
        m = min(len(have), len(want))
        diff = np.flatnonzero(have[:m] != want[:m])
        common = int(diff[0]) if diff.size else m
        if keep_last:
            common = min(common, len(want) - 1)
        common = max(common, 0)
        if not llama._ctx.kv_cache_seq_rm(-1, common, -1):
            llama._ctx.kv_cache_clear()
            common = 0
        llama.n_tokens = common
        rest = [int(t) for t in want[common:]]
        if rest:
            llama.eval(rest)
        return common

    def _continuation_logprob(self, tokens: Sequence[int]) -> float:
        """Evaluate `tokens` after the cache's current content, keeping every position's logits, and
        return the summed log-probability of ``tokens[1:]`` (each token given everything before it)."""
        import numpy as np

        llama = self._llama
        n_vocab = llama.n_vocab()
        total = 0.0
        for start in range(0, len(tokens), llama.n_batch):
            chunk = [int(t) for t in tokens[start:start + llama.n_batch]]
            n_past = llama.n_tokens
            llama._ctx.kv_cache_seq_rm(-1, n_past, -1)
            llama._batch.set_batch(batch=chunk, n_past=n_past, logits_all=True)
            llama._ctx.decode(llama._batch)
            llama.input_ids[n_past:n_past + len(chunk)] = chunk
            llama.n_tokens = n_past + len(chunk)
            targets = np.asarray(tokens[start + 1:start + len(chunk) + 1], dtype=np.intp)
            if targets.size:
                logits = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(len(chunk) * n_vocab,))
                rows = _log_softmax(logits.reshape(len(chunk), n_vocab)[: targets.size])
                total += float(rows[np.arange(targets.size), targets].sum())
        return total

    def _check_fits(self, n: int, what: str) -> None:
        n_ctx = self._llama.n_ctx()
        if n > n_ctx:
            raise _ContextOverflow(
                f"the {what} has {n} tokens but the local model's context holds {n_ctx} "
                f"(set HONING_LOCAL_N_CTX, up to the model's training context)",
                retryable=False,
            )

    # -- grammars and samplers ----------------------------------------------------------------------

    def _grammar_sampler(self, grammar: str) -> Any:
        """A fresh grammar sampler, cloned from a parsed one cached per grammar string."""
        llama_cpp = self._llama_cpp
        parsed = self._grammars.get(grammar)
        if parsed is None:
            # LlamaGrammar.from_string only stores the text; llama.cpp parses it here.
            from llama_cpp.llama_grammar import LlamaGrammar

            lg = LlamaGrammar.from_string(grammar, verbose=False)
            parsed = llama_cpp.llama_sampler_init_grammar(
                self._llama._model.vocab, lg._grammar.encode("utf-8"), lg._root.encode("utf-8")
            )
            if not parsed:
                raise LMError(f"invalid GBNF grammar (llama.cpp could not parse it):\n{grammar}",
                              retryable=False)
            if len(self._grammars) >= _MAX_CACHED_GRAMMARS:  # forget the oldest parsed grammar
                oldest = next(iter(self._grammars))
                llama_cpp.llama_sampler_free(self._grammars.pop(oldest))
            self._grammars[grammar] = parsed
        return llama_cpp.llama_sampler_clone(parsed)

    def _sampler(self, *, temperature: float | None, seed: int | None) -> Any:
        """The sampler chain of a call (greedy, or top-k/top-p/min-p/temperature with a seed)."""
        from llama_cpp import _internals

        llama_cpp = self._llama_cpp
        sampler = _internals.LlamaSampler()
        if not temperature:
            sampler.add_greedy()
        else:
            sampler.add_top_k(40)
            sampler.add_top_p(0.95, 1)
            sampler.add_min_p(0.05, 1)
            sampler.add_temp(float(temperature))
            sampler.add_dist(llama_cpp.LLAMA_DEFAULT_SEED if seed is None else int(seed) & 0xFFFFFFFF)
        return sampler

    def grammar_accepts(self, grammar: str, text: str) -> bool:
        """Whether llama.cpp's grammar engine admits `text` as a complete string of `grammar`.

        Feeds the tokens of `text` one by one to the grammar sampler and then checks that the grammar
        allows ending there. (Used by tests; handy to check a grammar without decoding.)
        """
        with self._lock:
            self._ensure_loaded()
            llama_cpp = self._llama_cpp
            g = self._grammar_sampler(grammar)
            try:
                for token in self.tokenize(text, add_bos=False):
                    if not self._grammar_allows(g, token):
                        return False
                    llama_cpp.llama_sampler_accept(g, token)
                return self._grammar_allows(g, self._llama.token_eos())
            finally:
                llama_cpp.llama_sampler_free(g)

    def _grammar_allows(self, g: Any, token: int) -> bool:
        """Whether grammar sampler `g`, in its current state, admits `token` next (cheap: one candidate)."""
        llama_cpp = self._llama_cpp
        data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
        arr = llama_cpp.llama_token_data_array(
            data=ctypes.cast(data, llama_cpp.llama_token_data_p), size=1, selected=-1, sorted=False,
        )
        llama_cpp.llama_sampler_apply(g, ctypes.byref(arr))
        return math.isfinite(data[0].logit)

    def _sample(self, sampler: Any, g: Any) -> int:
        """Sample the next token from the last logits, under grammar sampler `g` (None: no grammar).

        Like llama.cpp's common sampler: sample without the grammar first and keep the token if the
        grammar admits it (one cheap check); only otherwise apply the grammar to the whole vocabulary
        and sample again. Greedy decoding gives the same token as applying the grammar first.
        """
        import numpy as np

        llama_cpp = self._llama_cpp
        llama = self._llama
        token = int(sampler.sample(llama._ctx, -1))
        if g is None:
            return token
        if not self._grammar_allows(g, token):
            if self._candidates is None:
                from llama_cpp import _internals

                self._candidates = _internals.LlamaTokenDataArray(n_vocab=llama.n_vocab())
            cand = self._candidates
            logits = np.ctypeslib.as_array(llama._ctx.get_logits_ith(-1), shape=(llama.n_vocab(),))
            cand.copy_logits(logits)
            cand.candidates.selected = -1
            llama_cpp.llama_sampler_apply(g, ctypes.byref(cand.candidates))
            llama_cpp.llama_sampler_apply(sampler.sampler, ctypes.byref(cand.candidates))
            token = int(cand.candidates.data[cand.candidates.selected].id)
            llama_cpp.llama_sampler_accept(sampler.sampler, token)
        llama_cpp.llama_sampler_accept(g, token)
        return token

    # -- decoding -----------------------------------------------------------------------------------

    def complete(self, prompt: str, *, stop: Iterable[str] = (), grammar: str | None = None,
                 max_tokens: int | None = None, temperature: float | None = 0.0,
                 seed: int | None = None) -> dict[str, Any]:
        """Continue a raw text `prompt` (no chat template).

        Greedy when `temperature` is 0 or None; otherwise top-k/top-p/min-p sampling seeded with `seed`
        (a random seed when None). Stops at the end-of-generation token, at the first stop sequence
        (which is cut off the text) or after `max_tokens` (default `DEFAULT_MAX_TOKENS`, capped by the
        free context). Returns ``{"text", "prompt_tokens", "completion_tokens",
        "reused_prompt_tokens", "finish_reason" ("stop"|"length"), "seconds"}``.
        """
        with self._lock:
            self._ensure_loaded()
            tokens = self.tokenize(prompt)
            return self._generate(tokens, stop=stop, grammar=grammar, max_tokens=max_tokens,
                                  temperature=temperature, seed=seed)

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The prompt text of `messages` under the model's chat template, ready for the assistant turn."""
        with self._lock:
            llama = self._ensure_loaded()
            if self._chat_formatter is None:
                from llama_cpp import llama_chat_format

                template = llama.metadata.get("tokenizer.chat_template")
                if not template:
                    raise ConfigurationError(
                        f"the local model {self.path.name!r} has no chat template; use a prompt "
                        f"(transcript) adapter with it"
                    )
                eos, bos = llama.token_eos(), llama.token_bos()
                self._chat_formatter = llama_chat_format.Jinja2ChatFormatter(
                    template=template,
                    eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
                    bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
                    add_generation_prompt=True,
                )
            msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
            return str(self._chat_formatter(messages=msgs).prompt)

    def chat(self, messages: Sequence[Mapping[str, str]], *, stop: Iterable[str] = (),
             grammar: str | None = None, max_tokens: int | None = None,
             temperature: float | None = 0.0, seed: int | None = None) -> dict[str, Any]:
        """Like `complete`, on `messages` rendered with the model's chat template."""
        with self._lock:
            prompt = self.render_chat(messages)
            tokens = self.tokenize(prompt, special=True)
            return self._generate(tokens, stop=stop, grammar=grammar, max_tokens=max_tokens,
                                  temperature=temperature, seed=seed)

    def _generate(self, tokens: list[int], *, stop: Iterable[str], grammar: str | None,
                  max_tokens: int | None, temperature: float | None, seed: int | None) -> dict[str, Any]:
        llama = self._llama
        llama_cpp = self._llama_cpp
        started = time.perf_counter()
        if not tokens:
            tokens = [llama.token_bos() if llama.token_bos() != -1 else llama.token_eos()]
        self._check_fits(len(tokens), "prompt")
        stops = [s for s in stop if s]
        budget = DEFAULT_MAX_TOKENS if max_tokens is None else int(max_tokens)
        room = llama.n_ctx() - len(tokens)
        limit = max(0, min(budget, room))
        sampler = self._sampler(temperature=temperature, seed=seed)
        g = self._grammar_sampler(grammar) if grammar is not None else None
        vocab = llama._model.vocab
        reused = self._sync(tokens, keep_last=True)
        prompt_done = time.perf_counter()
        out: list[int] = []
        data = b""
        text = ""
        finish = "length"
        try:
            while len(out) < limit:
                token = self._sample(sampler, g)
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = "stop"
                    break
                out.append(token)
                data += llama._model.detokenize([token])
                if stops:
                    text = data.decode("utf-8", errors="ignore")
                    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                    if cut >= 0:
                        text = text[:cut]
                        finish = "stop"
                        break
                if len(out) < limit:
                    llama.eval([token])
        finally:
            sampler.close()
            if g is not None:
                llama_cpp.llama_sampler_free(g)
        if finish != "stop" or not stops:
            text = data.decode("utf-8", errors="replace")
        done = time.perf_counter()
        return {
            "text": text,
            "prompt_tokens": len(tokens),
            "completion_tokens": len(out),
            "reused_prompt_tokens": reused,
            "finish_reason": finish,
            "seconds": done - started,
            "prompt_seconds": prompt_done - started,
        }

    # -- choice scoring -----------------------------------------------------------------------------

    def score_choices(self, prompt: str, choices: Sequence[str], *, special: bool = False,
                      terminator: str | None = "\n") -> dict[str, Any]:
        """Log-likelihood of each choice as the continuation of `prompt`, without decoding.

        ``logprobs[choice]`` is the sum of the log-probabilities of the tokens of
        ``choice + terminator`` given the prompt (see the module doc for the leading-space convention;
        `terminator` None scores the choice alone). The prompt is tokenised on its own and each
        continuation separately without BOS; the prompt's KV cache is computed once (reusing the prefix
        shared with the previous call) and each choice is evaluated on top of it in one batch.
        `special` parses special tokens (``<|im_start|>``...) in the prompt, for chat-rendered prompts.

        Returns ``{"logprobs": {choice: float}, "best": choice, "prompt_tokens",
        "completion_tokens": 0, "reused_prompt_tokens", "choice_tokens", "seconds"}`` where
        ``prompt_tokens`` counts the prompt plus every scored continuation (all of it is input the
        model read) and ``choice_tokens`` the continuations alone.
        """
        unique = list(dict.fromkeys(str(c) for c in choices))
        if not unique:
            raise ValueError("score_choices needs at least one choice")
        with self._lock:
            llama = self._ensure_loaded()
            started = time.perf_counter()
            stripped = prompt.rstrip(" \t")
            lead = prompt[len(stripped):]
            p_tokens = self.tokenize(stripped, special=special)
            if not p_tokens:
                bos = llama.token_bos()
                p_tokens = [bos if bos != -1 else llama.token_eos()]
            tail = terminator or ""
            continuations = {
                c: self.tokenize(lead + c + tail, special=special, add_bos=False) for c in unique
            }
            longest = max(len(t) for t in continuations.values())
            self._check_fits(len(p_tokens) + longest, "prompt plus the longest choice")
            reused = self._sync(p_tokens[:-1], keep_last=False)
            prompt_done = time.perf_counter()
            if self._n_seq > 1:
                logprobs = self._score_parallel(p_tokens, continuations)
            else:
                logprobs = self._score_sequential(p_tokens, continuations)
            n_choice_tokens = sum(len(t) for t in continuations.values())
            best = max(unique, key=lambda c: logprobs[c])
            done = time.perf_counter()
            return {
                "logprobs": {str(c): logprobs[str(c)] for c in choices},
                "best": best,
                "prompt_tokens": len(p_tokens) + n_choice_tokens,
                "completion_tokens": 0,
                "reused_prompt_tokens": reused,
                "choice_tokens": n_choice_tokens,
                "seconds": done - started,
                "prompt_seconds": prompt_done - started,
            }

    def _score_sequential(self, p_tokens: list[int], continuations: dict[str, list[int]]) -> dict[str, float]:
        """One choice after the other, each evaluated on top of the cached prompt (one sequence)."""
        llama = self._llama
        base = len(p_tokens) - 1
        logprobs: dict[str, float] = {}
        for choice, cont in continuations.items():
            llama.n_tokens = base
            logprobs[choice] = self._continuation_logprob([p_tokens[-1], *cont]) if cont else 0.0
        return logprobs

    def _score_parallel(self, p_tokens: list[int], continuations: dict[str, list[int]]) -> dict[str, float]:
        """All choices in as few batches as possible, each in its own KV sequence sharing the prompt.

        The cache (sequence 0) holds the prompt but its last token. Each batch holds that last token
        once, tagged with every sequence of the batch, then each choice's tokens in their own sequence
        at the same positions; every row has logits. Afterwards sequence 0 holds the whole prompt.
        """
        import numpy as np

        llama = self._llama
        llama_cpp = self._llama_cpp
        memory = llama._ctx.memory
        batch = llama._batch.batch
        n_vocab = llama.n_vocab()
        base = len(p_tokens) - 1
        last = int(p_tokens[-1])
        items = [(c, t) for c, t in continuations.items() if t]
        logprobs = {c: 0.0 for c, t in continuations.items() if not t}
        # a batch holds at most n_batch tokens, and the cache the prompt plus one batch
        budget = min(llama.n_batch, llama.n_ctx() - base)
        groups: list[list[tuple[str, list[int]]]] = []
        size = 1
        for item in items:
            if groups and len(groups[-1]) < self._n_seq - 1 and size + len(item[1]) <= budget:
                groups[-1].append(item)
                size += len(item[1])
            else:
                if 1 + len(item[1]) > budget:
                    raise _ContextOverflow(
                        f"a choice has {len(item[1])} tokens; at most {budget - 1} can be scored after "
                        f"this prompt"
                    )
                groups.append([item])
                size = 1 + len(item[1])
        used = 0
        try:
            for group in groups:
                for seq in range(1, used + 1):
                    llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
                llama_cpp.llama_memory_seq_rm(memory, 0, base, -1)
                used = len(group)
                for seq in range(1, used + 1):
                    llama_cpp.llama_memory_seq_cp(memory, 0, seq, -1, -1)
                # row 0: the prompt's last token, in sequence 0 and every choice's sequence
                batch.token[0] = last
                batch.pos[0] = base
                batch.n_seq_id[0] = used + 1
                for k in range(used + 1):
                    batch.seq_id[0][k] = k
                batch.logits[0] = True
                rows: list[tuple[str, list[int], int]] = []
                i = 1
                for seq, (choice, cont) in enumerate(group, start=1):
                    rows.append((choice, cont, i))
                    for j, token in enumerate(cont):
                        batch.token[i] = int(token)
                        batch.pos[i] = base + 1 + j
                        batch.n_seq_id[i] = 1
                        batch.seq_id[i][0] = seq
                        batch.logits[i] = True
                        i += 1
                batch.n_tokens = i
                llama._ctx.decode(llama._batch)
                all_logits = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(i * n_vocab,))
                all_logits = all_logits.reshape(i, n_vocab)
                for choice, cont, start in rows:
                    # the prompt's last token predicts cont[0]; cont[j] predicts cont[j + 1]
                    idx = [0] + list(range(start, start + len(cont) - 1))
                    lp = _log_softmax(all_logits[idx])
                    logprobs[choice] = float(lp[np.arange(len(cont)), np.asarray(cont)].sum())
        finally:
            for seq in range(1, self._n_seq):
                llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
            if groups:
                llama.input_ids[base] = last
                llama.n_tokens = base + 1
        return logprobs

    def score_chat_choices(self, messages: Sequence[Mapping[str, str]],
                           choices: Sequence[str]) -> dict[str, Any]:
        """`score_choices` on `messages` rendered with the chat template; the terminator is end-of-turn."""
        with self._lock:
            prompt = self.render_chat(messages)
            llama = self._llama
            eos = llama.token_eos()
            terminator = llama._model.token_get_text(eos) if eos != -1 else None
            return self.score_choices(prompt, choices, special=True, terminator=terminator)


_engines: dict[pathlib.Path, LocalEngine] = {}
_engines_lock = threading.Lock()


def get_engine(path: str | os.PathLike[str]) -> LocalEngine:
    """The process's one `LocalEngine` for this GGUF file (created on first request, loaded lazily)."""
    key = pathlib.Path(path).expanduser().resolve()
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            if not _engines:
                atexit.register(_close_engines)
            engine = _engines[key] = LocalEngine(key)
        return engine


def _close_engines() -> None:
    """Free llama.cpp models before interpreter teardown: freed later, llama-cpp-python's own finaliser
    runs after its C bindings are gone and prints a TypeError traceback at every exit."""
    for engine in list(_engines.values()):
        try:
            engine.close()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass

