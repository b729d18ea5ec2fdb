"""Run directories: an append-only JSON-lines event log written as a compile goes, so nothing finished
is ever lost, plus a summary and a score plot at the end.

Each event is flushed and fsync'd when written, so a run killed at any moment (even SIGKILL) leaves a
log of everything that had finished. ``resume=True`` reopens a run: the optimizer asks `finished()`
which candidates or trials are done and takes their results from the log instead of recomputing them
(the durable LM cache covers the one that was cut short). A run directory is never silently reused for
a different run: the first event records the optimizer and its parameters, and a resume with other
ones is refused, naming the difference.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from honing.errors import UserError

EVENTS = "events.jsonl"


class RunDirError(UserError):
    """A run directory that cannot be used as asked (already used, or resumed with other settings)."""


class RunLog:
    """The event log of one compile in `run_dir` (created if missing)."""

    def __init__(self, run_dir: str | os.PathLike[str], *, optimizer: str, parameters: dict[str, Any],
                 resume: bool = False) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / EVENTS
        self._lock = threading.Lock()
        #: True once `finish` wrote the run's summary (the optimizer closed its own log)
        self.closed = False
        self.previous: list[dict[str, Any]] = []
        if self.path.exists() and self.path.stat().st_size > 0:
            if not resume:
                raise RunDirError(f"{self.dir} already holds a run ({EVENTS}); pass resume=True (--resume) to "
                                  "continue it, or choose another run directory")
            self.previous = read_events(self.path)
            self._check_same_run(optimizer, parameters)
            self.event("resume")
        else:
            self.event("start", optimizer=optimizer, parameters=parameters)

    def _check_same_run(self, optimizer: str, parameters: dict[str, Any]) -> None:
        start = next((e for e in self.previous if e.get("event") == "start"), None)
        if start is None:
            raise RunDirError(f"{self.path} has no start event; it is not a honing run log")
        if start.get("optimizer") != optimizer:
            raise RunDirError(f"{self.dir} is a {start.get('optimizer')} run; cannot resume it with {optimizer}")
        theirs = start.get("parameters", {})
        diff = sorted(k for k in set(theirs) | set(parameters) if theirs.get(k) != parameters.get(k))
        if diff:
            details = ", ".join(f"{k}: {theirs.get(k)!r} then, {parameters.get(k)!r} now" for k in diff)
            raise RunDirError(f"cannot resume {self.dir} with different parameters ({details})")

    def event(self, kind: str, **fields: Any) -> None:
        """Append one event and make it durable before returning."""
        record = {"event": kind, "time": round(time.time(), 3), **fields}
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def finished(self, kind: str = "candidate") -> dict[str, dict[str, Any]]:
        """Events of `kind` from earlier sessions of this run, by their `key`."""
        return {e["key"]: e for e in self.previous if e.get("event") == kind and "key" in e}

    def finish(self, *, summary: dict[str, Any], points: list[tuple[str, float]], title: str) -> None:
        """Write `summary.json`, a human `summary.txt` and `scores.png` (when matplotlib is installed)."""
        self.event("finish", **summary)
        self.closed = True
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
        lines = [f"{title}", ""]
        lines += [f"  {key:<28} {score:.3f}" for key, score in points]
        lines += ["", *(f"{k}: {v}" for k, v in summary.items() if not isinstance(v, (list, dict)))]
        (self.dir / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        write_plot(self.dir / "scores.png", points, title)


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete event; a last line cut short by a kill is ignored."""
    events = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
    return events


def write_plot(path: Path, points: list[tuple[str, float]], title: str) -> bool:
    """A bar chart of score per candidate/trial; returns False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(points) + 2), 4))
    labels = [k for k, _ in points]
    scores = [s for _, s in points]
    best = max(range(len(scores)), key=scores.__getitem__) if scores else -1
    ax.bar(range(len(scores)), scores, color=["tab:orange" if i == best else "tab:blue" for i in range(len(scores))])
    ax.set_xticks(range(len(scores)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
