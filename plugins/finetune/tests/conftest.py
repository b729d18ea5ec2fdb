"""Fixtures of the finetune plugin's tests: a private models directory, and a loopback OpenAI-compatible
server with the files and fine-tuning routes whose "fine-tuned models" answer from their training file."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from honing.testing.server import OpenAICompatServer

KEYWORDS = (("arriv", "card_arrival"), ("deliver", "card_arrival"), ("exchange", "exchange_rate"),
            ("pin", "pin_blocked"))


@pytest.fixture(autouse=True)
def models_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Fine-tuned GGUFs go to a directory of the test's own, never to the user's models directory; the
    llama.cpp engines of the models a test made are closed after it (an engine left open until interpreter
    shutdown makes llama-cpp-python print tracebacks)."""
    path = tmp_path_factory.mktemp("models")
    monkeypatch.setenv("HONING_MODELS_DIR", str(path))
    yield path
    from honing.lm.local import get_engine

    for model in path.glob("*.gguf"):
        get_engine(model).close()


@pytest.fixture(scope="session", autouse=True)
def _close_base_engine() -> Iterator[None]:
    yield
    from honing.errors import ConfigurationError
    from honing.lm.local import get_engine, resolve_model_path

    with contextlib.suppress(ConfigurationError):  # the model may not be installed
        get_engine(resolve_model_path("smollm2-135m")).close()  # it reloads if used again


def keyword_intent(text: str) -> str:
    return next((intent for word, intent in KEYWORDS if word in text.lower()), "unknown")


def fine_tuned_responder(server: OpenAICompatServer) -> Callable[[dict[str, Any]], str]:
    """A fine-tuned model (``ft:...``) answers a request seen in its training files with the trained reply
    (a model that learnt its data by heart); a base model answers from keywords, in the chat adapter's tags."""

    def respond(body: dict[str, Any]) -> str:
        messages = body.get("messages") or []
        if str(body.get("model", "")).startswith("ft:"):
            for record in list(server.files.values()):
                for line in record["content"].decode("utf-8").splitlines():
                    row = json.loads(line)
                    if row["messages"][:-1] == messages:
                        return row["messages"][-1]["content"]
            return "<intent>unknown</intent>"
        query = messages[-1]["content"] if messages else ""
        text = re.sub(r"<[^>]+>", " ", query)
        return f"<intent>{keyword_intent(text)}</intent>"

    return respond


@pytest.fixture
def ft_server(make_openai_server: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAICompatServer]:
    """A loopback server with fine-tuning routes; its endpoint is also the environment's OpenAI endpoint."""
    holder: dict[str, OpenAICompatServer] = {}
    server = make_openai_server(fine_tuning=True, responder=lambda body: fine_tuned_responder(holder["s"])(body))
    holder["s"] = server
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    yield server


@pytest.fixture
def openai_env(ft_server: OpenAICompatServer, monkeypatch: pytest.MonkeyPatch) -> OpenAICompatServer:
    """`ft_server` as the environment's OpenAI endpoint, so LMs need no `api_base` (which saved programs
    refuse to load without `allow_endpoints=True`)."""
    monkeypatch.setenv("OPENAI_BASE_URL", ft_server.url)
    monkeypatch.setenv("OPENAI_API_BASE", ft_server.url)
    return ft_server
