"""Fixtures of honing-bootstrap's tests (helpers live in bootstrap_helpers.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import honing as hn
import pytest
from bootstrap_helpers import fake_lm
from honing.testing.contract import contract_examples


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def trainset() -> list[hn.Example]:
    return contract_examples()


@pytest.fixture
def lm() -> Any:
    lm = fake_lm()
    with hn.context(lm=lm):
        yield lm


@pytest.fixture
def fast_dir(tmp_path: Any) -> Any:
    """A directory for SQLite files: in memory-backed /dev/shm when there is one (SQLite's fsyncs on a
    busy disk take most of an Optuna storage test's time), else pytest's tmp_path."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(prefix="honing-test-", dir=shm))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL server `.ci/test` starts. Missing: a failure on CI (the service must be there),
    a skip on a developer machine (start one with ``source .ci/services; start_postgres``)."""
    url = os.environ.get("HONING_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("HONING_TEST_POSTGRES_URL is not set: .ci/test starts PostgreSQL for the postgres tests")
        pytest.skip("no PostgreSQL: run `source .ci/services; start_postgres` first (or use .ci/test)")
    return url
