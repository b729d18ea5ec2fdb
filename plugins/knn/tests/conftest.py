"""Fixtures of honing-knn's tests. Isolation (a per-test HONING_CACHE_DIR, settings restored), the
loopback server and the embedded model come from honing.testing.pytest_plugin; helpers live in
knn_helpers.py."""

from __future__ import annotations

import pytest
from knn_helpers import BagOfWords


@pytest.fixture
def bow() -> BagOfWords:
    return BagOfWords()
