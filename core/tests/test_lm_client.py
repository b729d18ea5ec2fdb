"""The LM client against the loopback server: calls, retries, cache, usage, history, secrets, errors."""

from __future__ import annotations

import email.utils
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from honing.errors import ConfigurationError, LMError
from honing.lm import client as client_mod
from honing.lm.cache import DiskCache, get_default_cache
from honing.lm.client import LM
from honing.lm.retry import RetryPolicy, is_retryable, parse_retry_after
from honing.lm.secrets import Secret, safe_url, scrub
from honing.lm.types import Completion, LMRequest, Usage
from honing.lm.usage import track_usage

pytestmark = pytest.mark.server


def ask(text: str, **kw: Any) -> LMRequest:
    return LMRequest(messages=[{"role": "user", "content": text}], **kw)


def make_lm(srv: Any, **kw: Any) -> LM:
    kw.setdefault("api_key", "test-key")
    kw.setdefault("retry_base", 0.001)
    kw.setdefault("retry_cap", 0.01)
    return LM("openai/test-model", api_base=srv.url, **kw)


# --- plain calls ------------------------------------------------------------------------------------

def test_basic_call_usage_and_history(openai_server: Any) -> None:
    lm = make_lm(openai_server)
    with track_usage() as tracker:
        c = lm(ask("hello there world"))
    assert isinstance(c, Completion)
    assert c.text == "echo: hello there world" and c.finish_reason == "stop" and not c.cached
    assert c.model == "openai/test-model"
    assert c.usage == Usage(calls=1, prompt_tokens=3, completion_tokens=4, cost=0.0)
    assert lm.usage == c.usage and tracker.total == c.usage
    body = openai_server.requests[0].body
    assert body["model"] == "test-model"
    assert body["messages"] == [{"role": "user", "content": "hello there world"}]
    assert body["temperature"] == 0.0
    (entry,) = lm.history
    assert entry["request"] == {"messages": [{"role": "user", "content": "hello there world"}]}
    assert entry["response"] == "echo: hello there world" and entry["cached"] is False
    assert entry["usage"]["prompt_tokens"] == 3 and entry["timestamp"] > 0
    assert lm.complete(ask("hello there world")).cached  # `complete` is the same call


def test_prompt_is_one_user_message_and_params_pass_through(openai_server: Any) -> None:
    lm = make_lm(openai_server, temperature=0.7, max_tokens=64, top_p=0.5)
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    lm(LMRequest(prompt="Q: two words\nA:", stop=["\n"], seed=3, temperature=0.1, response_format=schema))
    body = openai_server.requests[0].body
    assert body["messages"] == [{"role": "user", "content": "Q: two words\nA:"}]
    assert body["stop"] == ["\n"] and body["seed"] == 3 and body["temperature"] == 0.1
    assert body["max_tokens"] == 64 and body["top_p"] == 0.5
    assert body["response_format"] == schema
    assert openai_server.requests[0].headers["authorization"] == "Bearer test-key"


def test_choices_need_a_local_model(openai_server: Any) -> None:
    lm = make_lm(openai_server)
    with pytest.raises(ConfigurationError, match="choice scoring needs a local model"):
        lm(ask("pick", choices=["a", "b"]))
    assert openai_server.count == 0
    assert not lm.supports_choice_scoring and not lm.supports_grammar


def test_usage_is_thread_safe(openai_server: Any) -> None:
    lm = make_lm(openai_server, cache=False)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: lm(ask(f"w{i} x y")), range(64)))
    assert openai_server.count == 64
    assert lm.usage == Usage(calls=64, prompt_tokens=64 * 3, completion_tokens=64 * 4)
    assert len(lm.history) == 64


# --- retries ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["429", "500", "503", "drop", "truncated_json", "garbage_body"])
def test_retries_succeed_after_transient_fault(openai_server: Any, fault: str) -> None:
    lm = make_lm(openai_server)
    openai_server.script([fault, fault])
    c = lm(ask("retry me"))
    assert c.text == "echo: retry me"
    assert openai_server.count == 3
    assert lm.usage.calls == 3  # every request sent counts


def test_timeout_is_retried(make_openai_server: Any) -> None:
    srv = make_openai_server(timeout_sleep=5.0)
    lm = make_lm(srv, timeout=0.3)
    lm(ask("warm up"))
    srv.script(["timeout"])
    start = time.monotonic()
    assert lm(ask("slow")).text == "echo: slow"
    assert time.monotonic() - start < 4 and srv.count == 3


def test_retry_after_is_honoured(make_openai_server: Any) -> None:
    srv = make_openai_server(retry_after=1)
    lm = make_lm(srv)  # backoff alone would wait at most 0.01s
    lm(ask("warm up"))  # litellm's first call is slow: keep it out of the measurement
    srv.script(["429_retry_after"])
    start = time.monotonic()
    lm(ask("wait for me"))
    assert time.monotonic() - start >= 0.95
    assert srv.count == 3
    gap = srv.requests[2].time - srv.requests[1].time
    assert 0.95 <= gap < 3


def test_retry_after_http_date_and_policy() -> None:
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31
    assert parse_retry_after("2") == 2.0 and parse_retry_after("soon") is None
    assert parse_retry_after(email.utils.formatdate(now - 100, usegmt=True)) == 0.0
    policy = RetryPolicy(base=0.5, cap=4.0, max_retry_after=10)
    delays = [policy.delay(a) for a in range(10) for _ in range(20)]
    assert all(0 <= d <= 4.0 for d in delays) and max(delays) > 2  # full jitter up to the cap
    assert all(policy.delay(0) <= 0.5 for _ in range(50))
    assert policy.delay(3, retry_after=7) == 7 and policy.delay(3, retry_after=99) == 10


@pytest.mark.parametrize("fault,status", [("400", 400), ("401", 401), ("404", 404), ("422", 422)])
def test_non_retryable_fails_at_once(openai_server: Any, fault: str, status: int) -> None:
    lm = make_lm(openai_server)
    openai_server.script([fault])
    with pytest.raises(LMError) as info:
        lm(ask("bad"))
    assert openai_server.count == 1
    assert info.value.status_code == status and not info.value.retryable
    assert str(status) in str(info.value)


def test_exhausted_retries(openai_server: Any) -> None:
    lm = make_lm(openai_server, num_retries=3)
    openai_server.script(["503"] * 10)
    with pytest.raises(LMError) as info:
        lm(ask("never"))
    assert openai_server.count == 4  # 1 attempt + 3 retries
    assert info.value.status_code == 503 and info.value.retryable
    assert "after 4 attempts" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_is_retryable_by_status() -> None:
    class Err(Exception):
        def __init__(self, status: int) -> None:
            self.status_code = status

    assert [is_retryable(Err(s)) for s in (429, 500, 502, 503, 504, 408)] == [True] * 6
    assert [is_retryable(Err(s)) for s in (400, 401, 403, 404, 422)] == [False] * 5


# --- cache ------------------------------------------------------------------------------------------

def test_cache_hit_on_identical_call(openai_server: Any) -> None:
    lm = make_lm(openai_server)
    first = lm(ask("cache me"))
    second = lm(ask("cache me"))
    assert openai_server.count == 1
    assert second.cached and not first.cached
    assert second.text == first.text and second.usage == first.usage  # what producing it cost
    assert lm.usage == Usage(calls=1, prompt_tokens=2, completion_tokens=3, cache_hits=1)
    assert [h["cached"] for h in lm.history] == [False, True]
    # different requests, rollouts and output-changing settings miss
    lm(ask("cache me", rollout=1))
    make_lm(openai_server, temperature=0.5)(ask("cache me"))
    assert openai_server.count == 3
    # credentials and endpoints are not part of the key
    assert make_lm(openai_server, api_key="another-key")(ask("cache me")).cached


def test_cache_hit_in_a_fresh_process(openai_server: Any, honing_cache_dir: Path) -> None:
    lm = make_lm(openai_server)
    lm(ask("persist me"))
    assert openai_server.count == 1
    code = (
        "import sys\n"
        "from honing.lm.client import LM\n"
        "from honing.lm.types import LMRequest\n"
        "lm = LM('openai/test-model', api_base=sys.argv[1], api_key='test-key', num_retries=0)\n"
        "c = lm(LMRequest(messages=[{'role': 'user', 'content': 'persist me'}]))\n"
        "print(c.cached, c.text)\n"
    )
    env = {**os.environ, "HONING_CACHE_DIR": str(honing_cache_dir)}
    out = subprocess.run([sys.executable, "-c", code, openai_server.url], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True echo: persist me"
    assert openai_server.count == 1


def test_cache_false_bypasses_read_and_write(openai_server: Any) -> None:
    cached_lm = make_lm(openai_server)
    cached_lm(ask("shared"))
    lm = make_lm(openai_server, cache=False)
    assert not lm(ask("shared")).cached  # does not read
    lm(ask("only uncached"))
    assert openai_server.count == 3
    assert len(get_default_cache()) == 1  # did not write
    assert lm.cache is None


def test_history_is_bounded(openai_server: Any) -> None:
    lm = make_lm(openai_server, history_size=25)
    request = ask("again and again")
    for _ in range(10_000):
        lm(request)
    assert len(lm.history) == 25
    assert openai_server.count == 1
    assert lm.usage.cache_hits == 9_999 and lm.usage.calls == 1


def test_explicit_disk_cache(openai_server: Any, tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "own.sqlite3")
    lm = make_lm(openai_server, cache=cache)
    lm(ask("x"))
    assert len(cache) == 1 and len(get_default_cache()) == 0


# --- configuration errors ---------------------------------------------------------------------------

def test_unknown_provider() -> None:
    with pytest.raises(ConfigurationError) as info:
        LM("opneai/gpt-4o-mini")
    message = str(info.value)
    assert "'opneai'" in message and "openai" in message and "anthropic" in message
    with pytest.raises(ConfigurationError):
        LM("definitely-not-a-model-name-xyz")


def test_missing_api_key_is_detected_before_sending(no_provider_keys: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    litellm = client_mod.import_litellm()

    def must_not_send(**kwargs: Any) -> Any:
        raise AssertionError("litellm.completion was called without a key")

    monkeypatch.setattr(litellm, "completion", must_not_send)
    lm = LM("openai/x", num_retries=0)
    start = time.monotonic()
    with pytest.raises(ConfigurationError) as info:
        lm(ask("hi"))
    assert "OPENAI_API_KEY" in str(info.value) and "api_key" in str(info.value)
    assert time.monotonic() - start < 5
    anthropic = LM("anthropic/claude-3-5-haiku-latest")
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        anthropic(ask("hi"))


def test_provider_and_capabilities(openai_server: Any) -> None:
    lm = make_lm(openai_server)
    assert lm.provider == "openai"
    assert lm.supports_response_schema is False  # not in litellm's model map
    assert LM("openai/gpt-4o-mini", api_key="k").supports_response_schema is True
    local = LM("local/smollm2-135m")
    assert local.provider == "local" and local.supports_choice_scoring and local.supports_grammar
    assert not local.supports_response_schema


# --- state, copies ----------------------------------------------------------------------------------

def test_state_round_trip_and_copy(openai_server: Any) -> None:
    lm = make_lm(openai_server, temperature=0.3, max_tokens=12, num_retries=2, top_p=0.9)
    state = lm.to_state()
    assert json.loads(json.dumps(state)) == state
    assert state["api_base"] == openai_server.url and state["kwargs"]["top_p"] == 0.9
    assert "api_key" not in json.dumps(state)
    again = LM.from_state(state, api_key="test-key")
    assert again.to_state() == state
    again(ask("state"))
    assert openai_server.requests[-1].body["max_tokens"] == 12

    lm(ask("copy"))
    twin = lm.copy(temperature=0.9)
    assert twin.temperature == 0.9 and twin.max_tokens == 12 and twin.cache is lm.cache
    assert twin.usage == Usage() and len(twin.history) == 0
    assert twin.copy(temperature=0.3)(ask("copy")).cached  # same settings -> shared cache entry
    assert lm.usage.calls == 1

    with pytest.raises(TypeError):
        pickle.dumps(lm)


def test_state_drops_api_base_with_credentials() -> None:
    lm = LM("openai/x", api_key="k", api_base="https://user:pw@example.com/v1?token=abc")
    state = lm.to_state()
    assert "api_base" not in state
    assert "pw" not in repr(lm) and "abc" not in repr(lm)
    assert safe_url("https://example.com/v1") and not safe_url("https://example.com/v1?key=1")


def test_local_provider_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local path hands the typed request to a local backend and takes its Completion as it is (a
    fake backend here: no model runs); the LM's own cache and accounting apply."""
    calls: list[LMRequest] = []

    class FakeBackend:
        def __init__(self, model: str, options: Any) -> None:
            self.model = model

        def complete(self, request: LMRequest) -> Completion:
            calls.append(request)
            return Completion(text="yes", model=self.model,
                              usage=Usage(calls=1, prompt_tokens=9, reused_prompt_tokens=7),
                              choice_logprobs={"yes": -0.1, "no": -2.3}, finish_reason="stop")

        def count_prompt_tokens(self, request: LMRequest) -> int:
            return 9

        def price(self, prompt_tokens: int, completion_tokens: int) -> float:
            return 0.0

    monkeypatch.setattr(client_mod, "_local_backend", FakeBackend)
    lm = LM("local/smollm2-135m", temperature=0.0, max_tokens=5)
    c = lm(LMRequest(prompt="Is it? Answer:", choices=["yes", "no"]))
    assert c.choice_logprobs == {"yes": -0.1, "no": -2.3}
    assert c.usage.reused_prompt_tokens == 7 and c.usage.cost == 0.0
    assert calls[0].max_tokens == 5 and calls[0].temperature == 0.0  # LM defaults filled in
    again = lm(LMRequest(prompt="Is it? Answer:", choices=["yes", "no"]))
    assert again.cached and again.choice_logprobs == c.choice_logprobs


# --- secrets ----------------------------------------------------------------------------------------

def test_secret_wrapper() -> None:
    s = Secret("sk-abc-very-secret")
    assert repr(s) == str(s) == f"{s}" == "***" and s.reveal() == "sk-abc-very-secret"
    with pytest.raises(TypeError):
        pickle.dumps(s)
    assert scrub("key sk-abc-very-secret and Authorization: Bearer abc.def") == \
        "key *** and Authorization: Bearer ***"
    assert scrub('{"api_key": "hunter2hunter2"}') == '{"api_key": "***"}'


def test_key_never_leaks(make_openai_server: Any, caplog: pytest.LogCaptureFixture,
                         honing_cache_dir: Path) -> None:
    sentinel = f"sk-SENTINEL-{uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []

    # 1. the server rejects the key (and, like some providers, repeats it in the error message)
    wrong = make_openai_server(api_key="the-right-key")
    lm = LM("openai/test-model", api_base=wrong.url, api_key=sentinel, num_retries=2, retry_base=0.001)
    with pytest.raises(LMError) as info:
        lm(ask("hello"))
    assert info.value.status_code == 401 and wrong.count == 1
    assert wrong.requests[0].headers["authorization"] == f"Bearer {sentinel}"  # the key was really sent
    texts += [str(info.value), repr(info.value), "".join(traceback.format_exception(info.value))]

    # 2. the key works, the server fails until retries run out, then succeeds on a later call
    right = make_openai_server(api_key=sentinel)
    lm = LM("openai/test-model", api_base=right.url, api_key=sentinel, num_retries=2, retry_base=0.001)
    right.script(["500", "503", "429"])
    with pytest.raises(LMError) as info:
        lm(ask("hello"))
    texts += [str(info.value), repr(info.value), "".join(traceback.format_exception(info.value))]
    assert lm(ask("hello")).text == "echo: hello"
    assert lm(ask("hello")).cached

    texts += [repr(lm), str(lm), repr(lm.history), json.dumps(list(lm.history)),
              json.dumps(lm.to_state()), repr(lm.copy()), caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    for text in texts:
        assert sentinel not in text
    assert "echo: hello" in "".join(texts)  # the texts checked are the real ones
    for path in honing_cache_dir.iterdir():
        assert sentinel.encode() not in path.read_bytes(), path


def test_env_key_is_scrubbed(make_openai_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = f"sk-SENTINEL-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", sentinel)
    srv = make_openai_server(api_key="other")
    lm = LM("openai/test-model", api_base=srv.url, num_retries=0)
    with pytest.raises(LMError) as info:
        lm(ask("hi"))
    assert srv.requests[0].headers["authorization"] == f"Bearer {sentinel}"
    assert sentinel not in str(info.value) and info.value.status_code == 401


def test_debug_log_line_per_call(openai_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    lm = make_lm(openai_server)
    with caplog.at_level(logging.DEBUG, logger="honing.lm"):
        lm(ask("log me"))
        lm(ask("log me"))
    mine = [r.getMessage() for r in caplog.records if r.name == "honing.lm"]
    assert len(mine) == 2
    assert "openai/test-model" in mine[0] and "cached=False" in mine[0]
    assert "openai/test-model" in mine[1] and "cached=True" in mine[1]
    assert "2 prompt + 3 completion tokens" in mine[0]


def test_concurrent_identical_calls_are_safe(openai_server: Any) -> None:
    lm = make_lm(openai_server)
    barrier = threading.Barrier(8)

    def call(_: int) -> str:
        barrier.wait()
        return lm(ask("same")).text

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(call, range(8))) == {"echo: same"}
    assert lm(ask("same")).cached
