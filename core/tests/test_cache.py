"""The SQLite disk cache: round trips, JSON only, threads, processes, durability, default location."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from honing.lm.cache import CACHE_FILENAME, DiskCache, cache_key, canonical_json, get_default_cache

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_round_trip_and_miss(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c.sqlite3")
    assert cache.get("nope") is None
    value = {"text": "héllo", "model": "m", "usage": {"calls": 1}, "choice_logprobs": {"a": -0.5}}
    cache.put("k1", value)
    assert cache.get("k1") == value
    cache.put("k1", {"text": "new"})
    assert cache.get("k1") == {"text": "new"}
    assert len(cache) == 1 and "k1" in cache


def test_directory_path_gets_default_filename(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.put("k", {"v": 1})
    assert (tmp_path / CACHE_FILENAME).exists()


def test_rows_are_json_text_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    DiskCache(path).put("k", {"text": "plain"})
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = [(r[1], r[2]) for r in conn.execute("PRAGMA table_info(completions)")]
        assert cols == [("key", "TEXT"), ("value", "TEXT"), ("created", "REAL")]
        key, value, created = conn.execute("SELECT key, value, created FROM completions").fetchone()
    finally:
        conn.close()
    assert key == "k" and json.loads(value) == {"text": "plain"} and created > 0


def test_corrupt_value_is_a_miss(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    cache = DiskCache(path)
    cache.put("k", {"text": "x"})
    conn = sqlite3.connect(path)
    conn.execute("UPDATE completions SET value = '{not json' WHERE key = 'k'")
    conn.commit()
    conn.close()
    assert cache.get("k") is None


def test_cache_key_is_canonical() -> None:
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})
    assert canonical_json({"b": (1, 2), "a": "é"}) == '{"a":"é","b":[1,2]}'
    assert len(cache_key({"x": object()})) == 64  # odd values are keyed by repr, never raise


def test_threads_share_one_cache(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c.sqlite3")
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(40):
                cache.put(f"{i}-{j}", {"i": i, "j": j})
                assert cache.get(f"{i}-{j}") == {"i": i, "j": j}
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache) == 16 * 40


def test_processes_write_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    code = (
        "import sys\n"
        "from honing.lm.cache import DiskCache\n"
        "c = DiskCache(sys.argv[1])\n"
        "for j in range(100):\n"
        "    c.put(f'{sys.argv[2]}-{j}', {'p': sys.argv[2], 'j': j})\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(p)], env=_env()) for p in range(3)]
    for p in procs:
        assert p.wait(timeout=60) == 0
    cache = DiskCache(path)
    assert len(cache) == 300
    assert cache.get("2-99") == {"p": "2", "j": 99}


def test_write_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    code = (
        "import os, signal, sys\n"
        "from honing.lm.cache import DiskCache\n"
        "DiskCache(sys.argv[1]).put('durable', {'text': 'kept'})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], env=_env(), timeout=60, check=False)
    assert proc.returncode == -9
    assert DiskCache(path).get("durable") == {"text": "kept"}


def test_default_cache_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path / "one"))
    first = get_default_cache()
    assert get_default_cache() is first
    assert first.path == (tmp_path / "one" / CACHE_FILENAME).resolve()
    monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path / "two"))
    second = get_default_cache()
    assert second is not first and second.path.parent == (tmp_path / "two").resolve()
    first.put("k", {"v": 1})
    assert second.get("k") is None


def test_no_pickle_in_cache_module() -> None:
    import honing.lm.cache as mod

    source = Path(mod.__file__).read_text()
    assert "import pickle" not in source and "pickle." not in source
