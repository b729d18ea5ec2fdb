"""The OpenAI-compatible inference routes: deterministic answers in the OpenAI JSON shapes.

``POST /v1/chat/completions`` and ``POST /v1/completions`` answer with the server's responder text (cut at
``stop`` and at ``max_tokens`` words), ``POST /v1/embeddings`` with deterministic hash-based unit vectors
(dim `EMBEDDING_DIM`) and ``GET /v1/models`` lists the server's models. Usage counts words as tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from honing.testing.server.messages import RecordedRequest, Reply, count_tokens

EMBEDDING_DIM = 16


class _Server(Protocol):
    """What these routes use of the `OpenAICompatServer` that calls them."""

    models: list[str]

    def _next_id(self) -> int: ...

    def _reply_text(self, body: dict[str, Any], fault: str) -> str: ...


def _content_text(content: Any) -> str:
    """Message content as text: a string, or the text parts of an OpenAI content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def prompt_text(body: dict[str, Any]) -> str:
    """The prompt of a chat or completions request as one string (messages joined by newlines)."""
    if "messages" in body:
        return "\n".join(_content_text(m.get("content")) for m in body.get("messages") or ())
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        return "\n".join(str(p) for p in prompt)
    return str(prompt)


def default_responder(body: dict[str, Any]) -> str:
    """A deterministic reply: ``echo: `` and the last message (or the prompt's last line)."""
    if body.get("messages"):
        last = _content_text(body["messages"][-1].get("content"))
    else:
        last = prompt_text(body).rstrip("\n").rsplit("\n", 1)[-1]
    return f"echo: {last}"


def embedding_vector(text: str, dim: int = EMBEDDING_DIM) -> list[float]:
    """A deterministic unit vector from the sha256 of `text`."""
    raw = hashlib.sha256(text.encode()).digest()
    values = [(raw[i % len(raw)] / 127.5) - 1.0 for i in range(dim)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _apply_stop_and_limit(text: str, body: dict[str, Any]) -> tuple[str, str]:
    finish = "stop"
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    for s in stop or ():
        if s and s in text:
            text = text[: text.index(s)]
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    if isinstance(limit, int) and limit > 0 and count_tokens(text) > limit:
        text = " ".join(text.split()[:limit])
        finish = "length"
    return text, finish


def _chat_completions(srv: _Server, req: RecordedRequest) -> Reply:
    body = req.body
    text = srv._reply_text(body, req.fault)
    text, finish = _apply_stop_and_limit(text, body)
    prompt_tokens = count_tokens(prompt_text(body))
    completion_tokens = count_tokens(text)
    return Reply(200, {
        "id": f"chatcmpl-{srv._next_id()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "test-model"),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish,
        }],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


def _completions(srv: _Server, req: RecordedRequest) -> Reply:
    body = req.body
    text = srv._reply_text(body, req.fault)
    text, finish = _apply_stop_and_limit(text, body)
    prompt_tokens = count_tokens(prompt_text(body))
    completion_tokens = count_tokens(text)
    return Reply(200, {
        "id": f"cmpl-{srv._next_id()}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model", "test-model"),
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


def _embeddings(srv: _Server, req: RecordedRequest) -> Reply:
    body = req.body
    inputs = body.get("input", "")
    if isinstance(inputs, str):
        inputs = [inputs]
    texts = [x if isinstance(x, str) else json.dumps(x) for x in inputs]
    dim = body.get("dimensions") or EMBEDDING_DIM
    tokens = sum(count_tokens(t) for t in texts)
    return Reply(200, {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": embedding_vector(t, dim)}
                 for i, t in enumerate(texts)],
        "model": body.get("model", "test-embedding"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })


def _models(srv: _Server, req: RecordedRequest) -> Reply:
    return Reply(200, {"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "honing-test"} for name in srv.models
    ]})


#: The default route table. Each handler takes ``(server, recorded_request)`` and returns a `Reply`.
#: A path segment ``{name}`` matches any one segment; its value is in ``recorded_request.params``.
ROUTES: dict[tuple[str, str], Callable[[_Server, RecordedRequest], Reply]] = {
    ("POST", "/v1/chat/completions"): _chat_completions,
    ("POST", "/v1/completions"): _completions,
    ("POST", "/v1/embeddings"): _embeddings,
    ("GET", "/v1/models"): _models,
}

#: POST paths that faults apply to by default.
FAULTABLE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
