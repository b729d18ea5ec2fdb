"""Pytest fixtures shared by the core's and every plugin's tests (loaded with ``-p honing.testing.pytest_plugin``).

- `honing_isolation` (autouse): every test gets its own empty ``HONING_CACHE_DIR`` and leaves the
  process-wide settings (`hn.configure`) as it found them, so tests never leak an LM into each other.
- `honing_cache_dir`: that directory.
- `make_openai_server` / `openai_server`: loopback OpenAI-compatible servers, stopped after the test.
- `no_provider_keys`: removes API-key environment variables for the test.
- `local_lm`: the embedded model (`LM("local/smollm2-135m")`), one per test session.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def honing_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.mktemp("honing-cache")
    monkeypatch.setenv("HONING_CACHE_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def honing_isolation(honing_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from honing import settings

    monkeypatch.setattr(settings, "_global_settings", settings._global_settings)
    yield


@pytest.fixture
def make_openai_server() -> Iterator[Callable[..., Any]]:
    from honing.testing.server import OpenAICompatServer

    started: list[OpenAICompatServer] = []

    def make(**options: Any) -> OpenAICompatServer:
        options.setdefault("max_lifetime", 120.0)
        server = OpenAICompatServer(**options).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def openai_server(make_openai_server: Callable[..., Any]) -> Any:
    return make_openai_server()


_KEY_VAR = re.compile(r"(API_KEY|_TOKEN|SECRET|ACCESS_KEY)$")


@pytest.fixture
def no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if _KEY_VAR.search(name):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def local_lm(honing_cache_dir: Path) -> Any:
    """The embedded model, with this test's own empty cache (the weights load once per process)."""
    import honing as hn

    return hn.LM("local/smollm2-135m")
