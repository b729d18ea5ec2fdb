"""Study storage URLs: postgresql URLs get the installed driver, nothing else changes."""

from __future__ import annotations

import importlib.util

import pytest
from honing.optimizers.kit.storage import with_driver


@pytest.mark.parametrize("url", ["sqlite:///run/study.db", "postgresql+psycopg2://u@h/db", "mysql://u@h/db",
                                 "not a url"])
def test_other_urls_are_left_alone(url):
    assert with_driver(url) == url


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_bare_postgresql_gets_psycopg2_when_psycopg3_is_absent(scheme, monkeypatch):
    present = {"psycopg2"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in present else None)
    assert with_driver(f"{scheme}://u:pw@127.0.0.1:5432/db") == "postgresql+psycopg2://u:pw@127.0.0.1:5432/db"
    present.add("psycopg")  # SQLAlchemy's own default driver is installed: its choice stands
    assert with_driver(f"{scheme}://u@h/db") == f"{scheme}://u@h/db"
