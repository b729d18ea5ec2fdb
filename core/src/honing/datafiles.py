"""Reading examples from JSONL and CSV files, with errors that name the file and line."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from honing.data import Example
from honing.errors import InputError


def load_examples(path: str | Path, *, inputs: Sequence[str] | None = None) -> list[Example]:
    """Examples from a `.jsonl` (one object per line) or `.csv` (header row) file.

    `inputs` marks the input fields; every row must have them.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = _read_jsonl(path)
    elif suffix == ".csv":
        rows = _read_csv(path)
    elif suffix == ".json":
        rows = _read_json_array(path)
    else:
        raise InputError(f"{path}: unknown data format {suffix!r}; use .jsonl, .json (an array) or .csv")
    if not rows:
        raise InputError(f"{path}: no examples in file")
    examples = []
    for line, row in rows:
        if inputs:
            missing = [k for k in inputs if k not in row]
            if missing:
                raise InputError(f"{path}:{line}: missing input field(s) {', '.join(map(repr, missing))} "
                                 f"(row has: {', '.join(row) or 'nothing'})")
            examples.append(Example(row).with_inputs(*inputs))
        else:
            examples.append(Example(row))
    return examples


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
            rows.append((number, row))
    return rows


def _read_json_array(path: Path) -> list[tuple[int, dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InputError(f"{path}: expected a JSON array of objects")
    return [(i, row) for i, row in enumerate(data)]


def _read_csv(path: Path) -> list[tuple[int, dict]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise InputError(f"{path}: empty CSV (no header row)")
        rows = []
        for row in reader:
            if None in row:
                raise InputError(f"{path}:{reader.line_num}: more values than header columns")
            rows.append((reader.line_num, dict(row)))
        return rows
