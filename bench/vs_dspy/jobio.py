"""What both workers share: job files in and out, resource figures, and the scripted answer rule.

Standard library only: it is imported by the driver (any Python), by the honing worker (honing's
venv) and by the DSPy worker (DSPy's own venv), so neither system's imports leak into the other.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

INSTRUCTION = "Classify the banking customer query into one intent."


def read_job() -> tuple[dict[str, Any], Path]:
    """``worker.py JOB.json OUT.json``: the job and where its result goes."""
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: {sys.argv[0]} JOB.json OUT.json")
    return json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")), Path(sys.argv[2])


def write_result(path: Path, result: dict[str, Any]) -> None:
    result.setdefault("peak_rss_mb", peak_rss_mb())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Stopwatch:
    """Wall and CPU (user + system, this process and its threads) time of a block."""

    def __enter__(self) -> Stopwatch:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def scripted_answer(text: str, label: str, intents: list[str]) -> str:
    """The instant LM's answer for a query: its label for ~70% of texts, a fixed wrong intent otherwise.

    A pure function of the text, so the honing fake and the DSPy fake answer identically.
    """
    h = int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:8], 16)
    if h % 10 < 7:
        return label
    return intents[(intents.index(label) + 1 + h % (len(intents) - 1)) % len(intents)]


def env_summary() -> dict[str, Any]:
    return {"python": sys.version.split()[0], "executable": sys.executable, "pid": os.getpid()}


def profiled(enabled: bool, fn: Any) -> tuple[Any, str | None]:
    """Run ``fn()``; with `enabled`, under cProfile, returning the top functions by own time too."""
    if not enabled:
        return fn(), None
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    value = prof.runcall(fn)
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(18)
    text = buf.getvalue()
    body = text[text.find("   ncalls"):] if "   ncalls" in text else text
    head = next((line.strip() for line in text.splitlines() if "function calls" in line), "")
    return value, head + "\n" + "\n".join(line.rstrip() for line in body.splitlines() if line.strip())
