"""Fixtures of honing-bayesian's tests (helpers live in bayesian_helpers.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL server `.ci/test` starts. Missing, the test fails (never skips: the storage tests are
    what proves scale-out); locally run ``source .ci/services; start_postgres`` first, or deselect them
    with ``-m "not postgres"``."""
    url = os.environ.get("HONING_TEST_POSTGRES_URL")
    if not url:
        pytest.fail("HONING_TEST_POSTGRES_URL is not set: .ci/test starts PostgreSQL for the postgres tests "
                    "(locally: `source .ci/services; start_postgres`, or deselect with -m 'not postgres')")
    return url


@pytest.fixture
def fresh_postgres_db(postgres_url: str) -> Iterator[str]:
    """A new, empty database on that server (dropped after the test): the workers then race to create
    Optuna's tables, as they do on a fresh deployment."""
    import uuid

    import sqlalchemy
    from honing.optimizers.kit.storage import with_driver

    name = f"honing_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(with_driver(postgres_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = sqlalchemy.engine.make_url(with_driver(postgres_url)).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
