"""Embedders: text to unit vectors, for retrieval-based optimizers such as KNNFewShot.

An embedder is any object with a `name` and an ``embed(texts) -> array`` method returning one row per
text (a 2-D float array, e.g. numpy). The `name` is stable and meaningful: it keys the on-disk cache and
is saved with compiled programs, so a loaded program can find its embedder again.

Where embedders come from:

- by name, through the `register_embedders` hook (`honing.plugins.lookup.resolve_embedder("openai/...")`).
  The core registers `LiteLLMEmbedder` for the embedding providers litellm knows (``openai/``,
  ``cohere/``, ``voyage/``, ...) and ``litellm/<provider>/<model>`` for any other litellm model;
  plugins register theirs (honing-knn: ``sentence-transformers/<model>`` and ``default``);
- any callable ``list[str] -> array`` (wrapped in `CallableEmbedder`);
- any object with `name` and `embed`.

`CachedEmbedder` wraps any of them: it embeds in batches, L2-normalises every row (so inner product is
cosine similarity), checks shapes and values, and keeps vectors in `EmbeddingCache`, a SQLite file
(``embeddings.sqlite3`` in ``$HONING_CACHE_DIR``, else the user cache directory) of raw float32 bytes
keyed by (embedder cache key, sha256 of the text): no pickle, so reading it runs no code. A second
compile over the same texts embeds nothing. A `CallableEmbedder` without an explicit `name` is not
cached on disk (its code may change under the same name).

numpy is imported on first use only: importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from honing.errors import ConfigurationError, LMError
from honing.lm.cache import SQLiteFile

logger = logging.getLogger("honing.embedders")

#: The name `lookup.resolve_embedder(None)` looks up: an alias registered by the plugin providing the default
#: embedder (honing-knn registers it for the packaged all-MiniLM-L6-v2 sentence-transformers model).
DEFAULT_EMBEDDER = "default"

#: Embedder names (or prefixes) that official plugins provide, for the ``pip install`` hint.
OFFICIAL_EMBEDDERS: Mapping[str, str] = {
    "default": "honing-knn",
    "sentence-transformers/": "honing-knn",
}

#: litellm providers with embedding models; each is registered as the prefix ``"<provider>/"``.
#: Any other litellm model is reachable as ``"litellm/<provider>/<model>"``.
LITELLM_EMBEDDING_PROVIDERS: tuple[str, ...] = (
    "openai", "azure", "azure_ai", "cohere", "voyage", "mistral", "gemini", "vertex_ai", "bedrock",
    "ollama", "huggingface", "together_ai", "jina_ai", "nvidia_nim", "fireworks_ai", "hosted_vllm",
    "infinity", "lm_studio", "watsonx", "databricks", "sagemaker", "deepinfra", "openrouter",
    "text-completion-openai",
)

CACHE_FILENAME = "embeddings.sqlite3"
#: Rows per SELECT ... IN (...) when reading the cache (well under SQLite's variable limit).
_READ_CHUNK = 500


@runtime_checkable
class Embedder(Protocol):
    """Text to vectors. `name` identifies the model (saved with programs, keys the cache)."""

    name: str

    def embed(self, texts: Sequence[str]) -> Any:
        """One row per text: a 2-D float array of shape ``(len(texts), dim)``."""
        ...


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key_of(embedder: Any) -> str | None:
    """What an embedder's vectors are cached under: its `cache_key` attribute if set, else its name;
    None (not cached) when it says ``cache_key = None``."""
    if hasattr(embedder, "cache_key"):
        return embedder.cache_key
    return getattr(embedder, "name", None)


# ----------------------------------------------------------------------------------------------------
# embedders

class CallableEmbedder:
    """A function ``list[str] -> array`` as an embedder.

    Give it a `name` to have its vectors cached on disk under that name (and to find it again when a
    program is loaded: pass the same embedder to the loader). Without one, the name is the function's
    qualified name and nothing is cached, since the function's code may change under that name.
    """

    def __init__(self, fn: Callable[[list[str]], Any], *, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"CallableEmbedder needs a callable, got {type(fn).__name__}")
        self.fn = fn
        qualname = getattr(fn, "__qualname__", type(fn).__qualname__)
        self.name = name or f"callable:{getattr(fn, '__module__', '?')}.{qualname}"
        self.cache_key = name

    def embed(self, texts: Sequence[str]) -> Any:
        return self.fn(list(texts))

    def __repr__(self) -> str:
        return f"CallableEmbedder({self.name!r})"


class LiteLLMEmbedder:
    """Any embedding model litellm serves, called through ``litellm.embedding``.

    ``LiteLLMEmbedder("openai/text-embedding-3-small", api_key=..., api_base=...)``. Without `api_key`
    litellm reads the provider's environment variable. `dimensions` asks models that support it for
    shorter vectors. The key is never saved, logged or put in the cache key.
    """

    def __init__(self, model: str, *, api_base: str | None = None, api_key: Any = None,
                 dimensions: int | None = None, timeout: float = 60.0, num_retries: int = 2,
                 **kwargs: Any) -> None:
        from honing.lm.secrets import Secret

        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"LiteLLMEmbedder needs a model name, got {model!r}")
        self.name = model
        self.model = model.removeprefix("litellm/")
        self.api_base = api_base
        self._api_key = Secret(api_key) if api_key is not None else None
        self.dimensions = dimensions
        self.timeout = timeout
        self.num_retries = num_retries
        self.kwargs = kwargs
        self.cache_key = model if dimensions is None else f"{model}#dimensions={dimensions}"

    def __repr__(self) -> str:
        return f"LiteLLMEmbedder({self.name!r})"

    def to_state(self) -> dict[str, Any]:
        """What a saved program keeps (never the key; the endpoint only if it is safe to write down)."""
        from honing.lm.secrets import safe_url

        state: dict[str, Any] = {"name": self.name}
        if self.api_base and safe_url(self.api_base):
            state["api_base"] = self.api_base
        if self.dimensions is not None:
            state["dimensions"] = self.dimensions
        return state

    def embed(self, texts: Sequence[str]) -> Any:
        from honing.lm.client import import_litellm
        from honing.lm.secrets import scrub

        litellm = import_litellm()

        kwargs: dict[str, Any] = {"model": self.model, "input": list(texts), "timeout": self.timeout,
                                  "num_retries": self.num_retries, **self.kwargs}
        if self.api_base is not None:
            kwargs["api_base"] = self.api_base
        if self._api_key is not None:
            kwargs["api_key"] = self._api_key.reveal()
        if self.dimensions is not None:
            kwargs["dimensions"] = self.dimensions
        try:
            response = litellm.embedding(**kwargs)
        except Exception as exc:  # noqa: BLE001 - every provider failure becomes one clear error
            secrets = [self._api_key] if self._api_key is not None else []
            raise LMError(f"embedding with {self.name!r} failed: {type(exc).__name__}: "
                          f"{scrub(str(exc), secrets)}",
                          status_code=getattr(exc, "status_code", None)) from None
        data = sorted(response.data, key=lambda item: _get(item, "index", 0))
        return [_get(item, "embedding") for item in data]


def _get(item: Any, key: str, default: Any = None) -> Any:
    return item.get(key, default) if isinstance(item, Mapping) else getattr(item, key, default)


def litellm_embedder_factory(name: str, **options: Any) -> LiteLLMEmbedder:
    """The factory the core registers for litellm's providers (``openai/``, ..., ``litellm/``)."""
    return LiteLLMEmbedder(name, **options)


def builtin_embedders() -> dict[str, Callable[..., Any]]:
    """The core's own registrations: litellm providers as name prefixes."""
    return {f"{p}/": litellm_embedder_factory for p in (*LITELLM_EMBEDDING_PROVIDERS, "litellm")}


# ----------------------------------------------------------------------------------------------------
# the disk cache

class EmbeddingCache(SQLiteFile):
    """Vectors by (embedder cache key, sha256 of the text) in one SQLite file, as raw float32 bytes.

    Thread-safe (one connection behind a lock); processes share the file through SQLite's locking
    (`honing.lm.cache.SQLiteFile`, shared with the LM cache). A write is one committed transaction per
    batch. A corrupt or unreadable entry is a miss.
    """

    filename = CACHE_FILENAME
    schema = ("CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, hash TEXT NOT NULL, dim INTEGER NOT NULL, "
              "vector BLOB NOT NULL, PRIMARY KEY (model, hash)) WITHOUT ROWID")

    def get_many(self, model: str, hashes: Sequence[str]) -> dict[str, Any]:
        """The cached vectors among `hashes`, as float32 numpy rows by hash."""
        import numpy as np

        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(hashes))
        try:
            with self._lock:
                conn = self._connection()
                for start in range(0, len(unique), _READ_CHUNK):
                    chunk = unique[start:start + _READ_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = conn.execute(f"SELECT hash, dim, vector FROM vectors WHERE model = ? AND hash IN ({marks})",
                                        (model, *chunk)).fetchall()
                    for h, dim, blob in rows:
                        if isinstance(blob, bytes) and len(blob) == 4 * dim:
                            found[h] = np.frombuffer(blob, dtype="<f4")
        except sqlite3.Error as exc:
            logger.warning("embedding cache %s could not be read (%s); treating as misses", self.path, exc)
            return {}
        return found

    def put_many(self, model: str, items: Sequence[tuple[str, Any]]) -> None:
        """Store (hash, vector) pairs in one transaction."""
        import numpy as np

        rows = []
        for h, vector in items:
            v = np.ascontiguousarray(vector, dtype="<f4")
            rows.append((model, h, int(v.shape[0]), v.tobytes()))
        try:
            with self._lock:
                conn = self._connection()
                conn.execute("BEGIN")
                try:
                    conn.executemany("INSERT OR REPLACE INTO vectors (model, hash, dim, vector) VALUES (?, ?, ?, ?)",
                                     rows)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            logger.warning("embedding cache %s could not be written (%s); vectors not cached", self.path, exc)

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection().execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def clear(self) -> None:
        with self._lock:
            self._connection().execute("DELETE FROM vectors")


def get_default_embedding_cache() -> EmbeddingCache:
    """The shared `EmbeddingCache` of the current cache directory (one instance per resolved path)."""
    return EmbeddingCache.default()


# ----------------------------------------------------------------------------------------------------
# batching, normalising, caching

class CachedEmbedder:
    """An embedder that batches, normalises and caches: ``CachedEmbedder(inner).embed(texts)``.

    Returns a C-contiguous float32 numpy array ``(len(texts), dim)`` whose rows have unit L2 norm (a
    zero vector stays zero). `cache` is an `EmbeddingCache`, None for the default one, or False for
    none. Repeated texts within a call are embedded once. `calls` and `embedded` count the inner
    embedder's calls and the texts it embedded (the cache's hits are not counted).
    """

    def __init__(self, embedder: Any, *, cache: EmbeddingCache | None | bool = None, batch_size: int = 64) -> None:
        if isinstance(embedder, CachedEmbedder):
            embedder = embedder.inner
        self.inner = embedder
        self.name: str = getattr(embedder, "name", None) or repr(embedder)
        self.cache_key = cache_key_of(embedder)
        if cache is None or cache is True:
            cache = get_default_embedding_cache() if self.cache_key else False
        self.cache: EmbeddingCache | None = cache if isinstance(cache, EmbeddingCache) else None
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.dim: int | None = getattr(embedder, "dim", None)
        self.calls = 0
        self.embedded = 0
        self._counter = threading.Lock()

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r})"

    def embed(self, texts: Sequence[str]) -> Any:
        import numpy as np

        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is a {type(text).__name__}, expected str")
        hashes = [text_hash(t) for t in texts]
        vectors: dict[str, Any] = {}
        if self.cache is not None and texts:
            vectors.update(self.cache.get_many(self.cache_key, hashes))  # type: ignore[arg-type]
            if vectors and self.dim is None:
                self.dim = len(next(iter(vectors.values())))
        missing = [(h, t) for h, t in dict(zip(hashes, texts)).items() if h not in vectors]
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start:start + self.batch_size]
            rows = self._embed_batch([t for _, t in batch])
            fresh = list(zip((h for h, _ in batch), rows))
            vectors.update(fresh)
            if self.cache is not None:
                self.cache.put_many(self.cache_key, fresh)  # type: ignore[arg-type]
        if not texts:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        out = np.empty((len(texts), self.dim or 0), dtype=np.float32)
        for i, h in enumerate(hashes):
            row = vectors[h]
            if row.shape[0] != out.shape[1]:
                raise ValueError(f"embedder {self.name!r}: cached vector of dimension {row.shape[0]} where "
                                 f"{out.shape[1]} was expected; clear the cache ({self.cache})")
            out[i] = row
        return out

    def _embed_batch(self, texts: list[str]) -> Any:
        import numpy as np

        raw = self.inner.embed(texts)
        with self._counter:
            self.calls += 1
            self.embedded += len(texts)
        try:
            matrix = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"embedder {self.name!r} returned something that is not a numeric array: {exc}") from None
        if matrix.ndim != 2 or matrix.shape[0] != len(texts) or matrix.shape[1] == 0:
            raise ValueError(f"embedder {self.name!r} returned shape {matrix.shape} for {len(texts)} texts; "
                             f"expected ({len(texts)}, dim)")
        if self.dim is None:
            self.dim = int(matrix.shape[1])
        elif matrix.shape[1] != self.dim:
            raise ValueError(f"embedder {self.name!r} returned vectors of dimension {matrix.shape[1]}, "
                             f"earlier ones had {self.dim}")
        if not np.isfinite(matrix).all():
            raise ValueError(f"embedder {self.name!r} returned NaN or infinite values")
        return normalize(matrix)


def normalize(matrix: Any) -> Any:
    """Rows scaled to unit L2 norm (float32, C-contiguous); all-zero rows stay zero."""
    import numpy as np

    m = np.ascontiguousarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out = m / norms
    return np.ascontiguousarray(out, dtype=np.float32)
