"""The loopback OpenAI-compatible test server: endpoints, recording, faults, bounds."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from honing.testing.server import EMBEDDING_DIM, FaultPlan, OpenAICompatServer, Reply

pytestmark = pytest.mark.server


def post(url: str, body: Any, *, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.status, resp.read()


CHAT = {"model": "test-model", "messages": [{"role": "system", "content": "be brief"},
                                            {"role": "user", "content": "hello there world"}]}


def test_chat_completion_echoes_and_counts_words(openai_server: OpenAICompatServer) -> None:
    status, _, raw = post(openai_server.url + "/chat/completions", CHAT)
    assert status == 200
    body = json.loads(raw)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "echo: hello there world"}
    assert body["choices"][0]["finish_reason"] == "stop"
    # prompt tokens = words in all messages, completion tokens = words in the reply
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert openai_server.count == 1
    rec = openai_server.requests[0]
    assert rec.method == "POST" and rec.path == "/v1/chat/completions"
    assert rec.body == CHAT and rec.fault == "ok"
    assert rec.headers["content-type"] == "application/json"


def test_responder_stop_and_max_tokens(make_openai_server: Any) -> None:
    srv = make_openai_server(responder=lambda body: "one two three STOP four five")
    _, _, raw = post(srv.url + "/chat/completions", {**CHAT, "stop": ["STOP"]})
    assert json.loads(raw)["choices"][0]["message"]["content"] == "one two three "
    _, _, raw = post(srv.url + "/chat/completions", {**CHAT, "max_tokens": 2})
    choice = json.loads(raw)["choices"][0]
    assert choice["message"]["content"] == "one two" and choice["finish_reason"] == "length"


def test_completions_embeddings_models(openai_server: OpenAICompatServer) -> None:
    status, _, raw = post(openai_server.url + "/completions", {"model": "m", "prompt": "a b\nc d e"})
    body = json.loads(raw)
    assert status == 200 and body["choices"][0]["text"] == "echo: c d e"
    assert body["usage"]["prompt_tokens"] == 5

    _, _, raw = post(openai_server.url + "/embeddings", {"model": "e", "input": ["x y", "z"]})
    emb = json.loads(raw)
    vectors = [d["embedding"] for d in emb["data"]]
    assert len(vectors) == 2 and all(len(v) == EMBEDDING_DIM for v in vectors)
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-9
    assert vectors[0] != vectors[1]
    _, _, raw2 = post(openai_server.url + "/embeddings", {"model": "e", "input": "x y"})
    assert json.loads(raw2)["data"][0]["embedding"] == vectors[0]  # deterministic

    status, raw = get(openai_server.url + "/models")
    assert status == 200 and [m["id"] for m in json.loads(raw)["data"]] == ["test-model"]


def test_unknown_route_is_404_and_routes_extend(openai_server: OpenAICompatServer) -> None:
    status, _, _ = post(openai_server.url + "/files", {"x": 1})
    assert status == 404
    openai_server.add_route("POST", "/v1/files", lambda srv, req: Reply(200, {"id": "file-1", **req.body}))
    status, _, raw = post(openai_server.url + "/files", {"x": 1})
    assert status == 200 and json.loads(raw) == {"id": "file-1", "x": 1}


@pytest.mark.parametrize("kind,status", [("429", 429), ("500", 500), ("503", 503), ("400", 400)])
def test_status_faults(openai_server: OpenAICompatServer, kind: str, status: int) -> None:
    openai_server.script([kind])
    got, headers, raw = post(openai_server.url + "/chat/completions", CHAT)
    assert got == status
    assert "error" in json.loads(raw)
    assert "retry-after" not in headers
    assert post(openai_server.url + "/chat/completions", CHAT)[0] == 200  # the script is used up
    assert [r.fault for r in openai_server.requests] == [kind, "ok"]


def test_retry_after_fault(make_openai_server: Any) -> None:
    srv = make_openai_server(retry_after=3)
    srv.script(["429_retry_after"])
    status, headers, _ = post(srv.url + "/chat/completions", CHAT)
    assert status == 429 and headers["retry-after"] == "3"


def test_content_faults(openai_server: OpenAICompatServer) -> None:
    openai_server.script(["empty", "garbage", "truncated_json"])
    _, _, raw = post(openai_server.url + "/chat/completions", CHAT)
    assert json.loads(raw)["choices"][0]["message"]["content"] == ""
    _, _, raw = post(openai_server.url + "/chat/completions", CHAT)
    garbage = json.loads(raw)["choices"][0]["message"]["content"]
    assert garbage and not garbage.startswith("echo:")
    status, _, raw = post(openai_server.url + "/chat/completions", CHAT)
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    assert raw.startswith(b"{")


def test_drop_closes_without_response(openai_server: OpenAICompatServer) -> None:
    openai_server.script(["drop"])
    conn = http.client.HTTPConnection("127.0.0.1", openai_server.port, timeout=5)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(CHAT),
                 headers={"Content-Type": "application/json"})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.getresponse()
    conn.close()
    assert openai_server.count == 1


def test_timeout_fault_outlasts_client(make_openai_server: Any) -> None:
    srv = make_openai_server(timeout_sleep=3.0)
    srv.script(["timeout"])
    start = time.monotonic()
    with pytest.raises(OSError):  # socket.timeout / URLError(timeout)
        post(srv.url + "/chat/completions", CHAT, timeout=0.2)
    assert time.monotonic() - start < 2.5


def test_fault_plan_is_seeded(make_openai_server: Any) -> None:
    def faults(seed: int) -> list[str]:
        srv = make_openai_server(faults=FaultPlan(rate=0.5, kinds=("429", "500", "empty"), seed=seed))
        for _ in range(30):
            post(srv.url + "/chat/completions", CHAT)
        return [r.fault for r in srv.requests]

    first, again, other = faults(7), faults(7), faults(8)
    assert first == again
    assert first != other
    assert 5 < sum(f != "ok" for f in first) < 25
    with pytest.raises(ValueError):
        FaultPlan(kinds=("nope",))


def test_api_key_check(make_openai_server: Any) -> None:
    srv = make_openai_server(api_key="right-key")
    status, _, raw = post(srv.url + "/chat/completions", CHAT, headers={"Authorization": "Bearer wrong-key"})
    assert status == 401 and "wrong-key" in json.loads(raw)["error"]["message"]  # leaks, on purpose
    status, _, _ = post(srv.url + "/chat/completions", CHAT, headers={"Authorization": "Bearer right-key"})
    assert status == 200


def test_concurrent_requests_are_all_recorded(make_openai_server: Any) -> None:
    srv = make_openai_server(latency=0.01)

    def worker(i: int) -> None:
        for j in range(10):
            msg = {"role": "user", "content": f"{i}-{j}"}
            post(srv.url + "/chat/completions", {"model": "m", "messages": [msg]})

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert srv.count == 160
    contents = {r.body["messages"][0]["content"] for r in srv.requests}
    assert len(contents) == 160


def test_stops_after_max_requests() -> None:
    with OpenAICompatServer(max_requests=2) as srv:
        url = srv.url
        assert post(url + "/chat/completions", CHAT)[0] == 200
        assert post(url + "/chat/completions", CHAT)[0] == 200
        deadline = time.monotonic() + 5
        while srv.running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not srv.running
        with pytest.raises(OSError):
            post(url + "/chat/completions", CHAT, timeout=1)


def test_stops_after_max_lifetime() -> None:
    srv = OpenAICompatServer(max_lifetime=0.3).start()
    try:
        url = srv.url
        assert post(url + "/chat/completions", CHAT)[0] == 200
        deadline = time.monotonic() + 5
        while srv.running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not srv.running
        with pytest.raises(OSError):
            post(url + "/chat/completions", CHAT, timeout=1)
    finally:
        srv.stop()
