"""Database URLs of optimizer studies (Optuna storages), shared by the plugins that keep one.

The core does not import Optuna or SQLAlchemy; this only rewrites the URL a user gives so that the
storage opens with a driver that is installed.
"""

from __future__ import annotations

import importlib.util


def with_driver(url: str) -> str:
    """``postgresql://`` (or ``postgres://``) as ``postgresql+psycopg2://`` when psycopg 3 is absent and
    psycopg2 is installed: SQLAlchemy 2.1 made psycopg 3 the default driver of a bare ``postgresql://``
    URL, while the plugins depend on psycopg2. Any other URL is returned unchanged."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return f"postgresql+psycopg2://{rest}"
    return url
