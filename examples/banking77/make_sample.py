"""Regenerate sample.jsonl and intents.json from the repository's data/banking77/train.csv (see ATTRIBUTION.md).

    python examples/banking77/make_sample.py

Deterministic: the same CSV always gives byte-identical files (tests/test_sample_data.py checks).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repo root, for bench.common

from bench.common import SAMPLE_INTENTS, banking77_subset  # noqa: E402

SEED = 0
PER_INTENT = 30


def build() -> tuple[list[str], list[dict[str, str]]]:
    """The 10 intents and the 300 rows: 30 per intent, dealt round-robin over the intents."""
    n = PER_INTENT * len(SAMPLE_INTENTS)
    split = banking77_subset(intents=SAMPLE_INTENTS, seed=SEED, n_train=n, n_val=0, n_dev=0)
    return split["intents"], split["train"]


def main() -> None:
    intents, rows = build()
    (HERE / "intents.json").write_text(json.dumps(intents, indent=2) + "\n", encoding="utf-8")
    with open(HERE / "sample.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"text": r["text"], "intent": r["intent"]}, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows over {len(intents)} intents to {HERE}")


if __name__ == "__main__":
    main()
