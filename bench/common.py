"""Data and output helpers shared by the benchmark scripts and by tests that need real data.

The data ships inside the repository, in `data/` at the repo root (see data/README.md for sources,
licences and checksums); `HONING_DATA_DIR` may point at another copy of the same layout, but nothing
needs it. Only stdlib is used so that any script can import this without the project installed.
"""

from __future__ import annotations

import csv
import json
import os
import random
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "bench" / "out"

# The ten intents of the shipped sample (`examples/banking77/`), in a fixed order. They are also the
# first ten intents `banking77_subset` picks. Why these ten: see examples/banking77/ATTRIBUTION.md.
SAMPLE_INTENTS: tuple[str, ...] = (
    "card_arrival",
    "exchange_rate",
    "pin_blocked",
    "lost_or_stolen_card",
    "top_up_failed",
    "balance_not_updated_after_bank_transfer",
    "cash_withdrawal_charge",
    "request_refund",
    "age_limit",
    "terminate_account",
)


def data_dir() -> Path:
    """Where the datasets are: `$HONING_DATA_DIR` if set, else the repository's own `data/`."""
    env = os.environ.get("HONING_DATA_DIR")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "data"


def _data_file(*parts: str) -> Path:
    path = data_dir().joinpath(*parts)
    if not path.is_file():
        hint = "HONING_DATA_DIR points at a copy without it" if os.environ.get("HONING_DATA_DIR") else (
            "the repository's data/ is incomplete (git checkout -- data/)"
        )
        raise FileNotFoundError(f"{path} not found: {hint}")
    return path


def banking77_rows(path: str | os.PathLike[str] | None = None) -> list[dict[str, str]]:
    """All rows of Banking77's train.csv as `{"text", "intent"}` (the CSV's `category` column renamed).

    Texts are stripped; exact duplicate texts (4 in the file) are kept only at their first occurrence,
    so that splits carved from these rows are disjoint by text, not only by row.
    """
    path = Path(path) if path is not None else _data_file("banking77", "train.csv")
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    with open(path, newline="", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            text = rec["text"].strip()
            if text and text not in seen:
                seen.add(text)
                rows.append({"text": text, "intent": rec["category"].strip()})
    return rows


def banking77_subset(
    n_intents: int = 10,
    *,
    seed: int = 0,
    n_train: int = 60,
    n_val: int = 40,
    n_dev: int = 200,
    intents: Sequence[str] | None = None,
    rows: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Disjoint, intent-balanced train/val/dev splits of Banking77's train CSV. Deterministic.

    Intents: `intents` if given (then `n_intents` is ignored), else the first `n_intents` of
    `SAMPLE_INTENTS` followed by the remaining intents from most to least frequent (the seed does not
    change which intents are picked).

    Each intent's rows are shuffled with `seed`. `dev` is dealt round-robin over the intents from the
    back of those shuffled lists, then `train` and `val` from the front; so `dev` does not change with
    `n_train`/`n_val`, nor `train` with `n_val`/`n_dev`, and any prefix of a split is balanced. With
    seed 0 the shipped sample is the front 30 rows per intent: the default `train` and `val` are inside
    it and the default `dev` is disjoint from it.
    """
    rows = banking77_rows() if rows is None else rows
    by_intent: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_intent.setdefault(r["intent"], []).append(r)

    if intents is None:
        rest = sorted((i for i in by_intent if i not in SAMPLE_INTENTS), key=lambda i: (-len(by_intent[i]), i))
        order = [i for i in SAMPLE_INTENTS if i in by_intent] + rest
        if not 0 < n_intents <= len(order):
            raise ValueError(f"n_intents must be in 1..{len(order)}, got {n_intents}")
        chosen = order[:n_intents]
    else:
        chosen = list(intents)
        unknown = [i for i in chosen if i not in by_intent]
        if unknown or len(set(chosen)) != len(chosen) or not chosen:
            raise ValueError(f"intents must be distinct known intents; unknown: {unknown}")

    rng = random.Random(seed)
    pools: dict[str, deque[dict[str, str]]] = {}
    for intent in chosen:  # shuffle in `chosen` order so the result depends only on (seed, intents)
        pool = list(by_intent[intent])
        rng.shuffle(pool)
        pools[intent] = deque(pool)

    def deal(n: int, *, from_back: bool) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        while len(out) < n:
            live = [i for i in chosen if pools[i]]
            if not live:
                raise ValueError(f"not enough rows for {n_train}+{n_val}+{n_dev} examples of {chosen}")
            for intent in live:
                if len(out) == n:
                    break
                out.append(dict(pools[intent].pop() if from_back else pools[intent].popleft()))
        return out

    dev = deal(n_dev, from_back=True)
    train = deal(n_train, from_back=False)
    val = deal(n_val, from_back=False)
    return {"intents": chosen, "train": train, "val": val, "dev": dev}


#: How many intents the tuning subsets skip: the ten of `SAMPLE_INTENTS`, which every reported split uses.
TUNING_INTENT_OFFSET = len(SAMPLE_INTENTS)


def banking77_tuning_subset(n_intents: int = 10, *, seed: int = 0, n_train: int = 60, n_val: int = 40,
                            n_dev: int = 200, rows: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Splits for choosing defaults: the same shape as `banking77_subset`, on the next `n_intents` intents
    by frequency after `SAMPLE_INTENTS`. No reported split uses these intents (every report, the README
    demo and the shipped sample are on `SAMPLE_INTENTS`), so a default tuned here is never measured on
    rows it was chosen on. Deterministic."""
    rows = banking77_rows() if rows is None else rows
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["intent"]] = counts.get(r["intent"], 0) + 1
    rest = sorted((i for i in counts if i not in SAMPLE_INTENTS), key=lambda i: (-counts[i], i))
    if not 0 < n_intents <= len(rest):
        raise ValueError(f"n_intents must be in 1..{len(rest)}, got {n_intents}")
    return banking77_subset(intents=rest[:n_intents], seed=seed, n_train=n_train, n_val=n_val, n_dev=n_dev,
                            rows=rows)


def gsm8k_rows(path: str | os.PathLike[str] | None = None) -> list[dict[str, str]]:
    """GSM8K train rows: `question`, `answer` (worked solution), plus `final`, the text after `####`."""
    path = Path(path) if path is not None else _data_file("gsm8k", "train.jsonl")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                final = rec["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
                rows.append({"question": rec["question"], "answer": rec["answer"], "final": final})
    return rows


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write `obj` as indented JSON (parents created; written atomically). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def out_path(name: str) -> Path:
    """`bench/out/<name>.json`, where a benchmark script writes its results."""
    return OUT_DIR / f"{name}.json"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def print_table(
    rows: Iterable[dict[str, Any]], columns: Sequence[str], *, file: TextIO | None = None
) -> str:
    """Print `rows` as a plain-text table of `columns` (numbers right-aligned, floats to 3 places).

    Missing keys print empty. Returns the table text as well.
    """
    rows = list(rows)
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    numeric = [
        all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in rows if c in r)
        for c in columns
    ]
    widths = [max([len(c)] + [len(row[k]) for row in cells]) for k, c in enumerate(columns)]

    def fmt(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    lines = [fmt(columns), "  ".join("-" * w for w in widths)] + [fmt(row) for row in cells]
    text = "\n".join(lines)
    print(text, file=file if file is not None else sys.stdout)
    return text
