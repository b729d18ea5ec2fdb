"""The on-disk LM cache: one SQLite file of JSON completions, shared by threads and processes.

The file is ``lm-cache.sqlite3`` in ``$HONING_CACHE_DIR``, else in the user cache directory
(``platformdirs.user_cache_dir("honing")``). Rows are ``(key TEXT PRIMARY KEY, value TEXT, created REAL)``
with `value` the JSON of `Completion.to_dict()`: no pickle, so a cache file can be read by anything and
loading it runs no code.

Every `put` is its own committed transaction in WAL mode, so a completion is on disk once the call that
made it returns (a process killed right after loses nothing; `synchronous=NORMAL` trades only the last
transactions on power loss). Many threads share one connection behind a lock; many processes share the
file through SQLite's locking, waiting up to `busy_timeout` for each other. That sharing is
`SQLiteFile`, which the embedding cache (`honing.embedders.EmbeddingCache`) uses too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Self

import platformdirs

logger = logging.getLogger("honing.lm")

CACHE_FILENAME = "lm-cache.sqlite3"
BUSY_TIMEOUT_MS = 30_000


def default_cache_dir() -> Path:
    """``$HONING_CACHE_DIR`` if set, else the platform's user cache directory for honing."""
    env = os.environ.get("HONING_CACHE_DIR")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("honing"))


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    # anything else (a callable passed as an LM option...) is keyed by its type and repr
    return f"<{type(value).__module__}.{type(value).__qualname__}> {value!r}"


def cache_key(payload: Any) -> str:
    """The sha256 hex digest of `payload`'s canonical JSON."""
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


_default_lock = threading.Lock()
_default_stores: dict[tuple[type, Path], SQLiteFile] = {}


def _set_up(conn: sqlite3.Connection, schema: str) -> None:
    """Switch to WAL and create the schema. Processes opening a fresh file at the same moment can get
    "database is locked" here without SQLite's busy handler being consulted (the journal-mode change
    needs an exclusive lock), so this step waits and retries on its own, up to `BUSY_TIMEOUT_MS`."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(schema)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


class SQLiteFile:
    """One SQLite file shared by threads and processes, the way honing's caches need it.

    Subclasses set `filename` (used when `path` is a directory) and `schema` (SQL run once per
    connection, e.g. ``CREATE TABLE IF NOT EXISTS ...``). Many threads share one connection behind
    `_lock`; processes share the file through SQLite's locking in WAL mode, waiting up to
    `BUSY_TIMEOUT_MS` for each other; a forked child opens its own connection. Call `_connection()`
    with `_lock` held.
    """

    filename: ClassVar[str]
    schema: ClassVar[str]

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path).expanduser()
        if p.is_dir() or (not p.exists() and p.suffix == ""):
            p = p / self.filename
        self.path = p.resolve()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # a connection is never used across fork: the child opens its own
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                               isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _set_up(conn, self.schema)
        self._conn = conn
        self._pid = os.getpid()
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    @classmethod
    def default(cls) -> Self:
        """The shared instance for ``default_cache_dir() / filename`` (one per class and resolved path,
        so a changed ``$HONING_CACHE_DIR`` gets its own)."""
        path = (default_cache_dir() / cls.filename).expanduser().resolve()
        with _default_lock:
            store = _default_stores.get((cls, path))
            if store is None:
                store = _default_stores[(cls, path)] = cls(path)
            return store  # type: ignore[return-value]


class DiskCache(SQLiteFile):
    """A key -> JSON-dict store in one SQLite file (see the module docstring).

    `path` is the database file, or a directory to hold ``lm-cache.sqlite3``.
    """

    filename = CACHE_FILENAME
    schema = ("CREATE TABLE IF NOT EXISTS completions "
              "(key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)")

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored dict for `key`, or None (a missing, unreadable or corrupt entry is a miss)."""
        try:
            with self._lock:
                row = self._connection().execute(
                    "SELECT value FROM completions WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            logger.warning("LM cache %s could not be read (%s); treating as a miss", self.path, exc)
            return None
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except ValueError:
            logger.warning("LM cache %s has a corrupt entry %s; ignoring it", self.path, key[:12])
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store `value` (a JSON-able dict) under `key`, committed before this returns."""
        text = canonical_json(value)
        try:
            with self._lock:
                self._connection().execute(
                    "INSERT OR REPLACE INTO completions (key, value, created) VALUES (?, ?, ?)",
                    (key, text, time.time()))
        except sqlite3.Error as exc:
            logger.warning("LM cache %s could not be written (%s); the result is not cached", self.path, exc)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            row = self._connection().execute("SELECT 1 FROM completions WHERE key = ?", (key,)).fetchone()
        return row is not None

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection().execute("SELECT COUNT(*) FROM completions").fetchone()[0])

    def clear(self) -> None:
        with self._lock:
            self._connection().execute("DELETE FROM completions")


def get_default_cache() -> DiskCache:
    """The shared `DiskCache` for the current default directory (one instance per resolved path)."""
    return DiskCache.default()
