"""Test helpers for honing-knn (a module with a unique name, so the whole suite can import it)."""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Any


class BagOfWords:
    """A deterministic, fast embedder: hashed word counts in 64 dimensions. Counts its calls."""

    dim = 64

    def __init__(self, name: str | None = "test/bag-of-words") -> None:
        self.name = name or "test/unnamed"
        if name is None:
            self.cache_key = None
        self.calls = 0
        self.texts: list[str] = []
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> Any:
        import numpy as np

        with self._lock:
            self.calls += 1
            self.texts.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
            out[row, self.dim - 1] += 0.01  # no all-zero rows
        return out
