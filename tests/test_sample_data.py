"""The shipped Banking77 sample and the benchmark data helpers (bench/common.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "examples" / "banking77"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load("honing_bench_common", ROOT / "bench" / "common.py")


@pytest.fixture(scope="module")
def sample() -> list[dict]:
    lines = (SAMPLE_DIR / "sample.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return common.banking77_rows()


def test_sample_has_300_rows_10_intents_x_30(sample):
    assert len(sample) == 300
    assert all(set(r) == {"text", "intent"} and r["text"].strip() == r["text"] != "" for r in sample)
    counts = Counter(r["intent"] for r in sample)
    assert len(counts) == 10 and set(counts.values()) == {30}
    assert len({r["text"] for r in sample}) == 300


def test_intents_json_matches_sample(sample):
    intents = json.loads((SAMPLE_DIR / "intents.json").read_text(encoding="utf-8"))
    assert intents == list(common.SAMPLE_INTENTS)
    assert {r["intent"] for r in sample} == set(intents)
    # Dealt round-robin: the first ten lines hold one query per intent, in intents.json order.
    assert [r["intent"] for r in sample[:10]] == intents


def test_sample_rows_come_from_banking77(sample, rows):
    source = {(r["text"], r["intent"]) for r in rows}
    assert all((r["text"], r["intent"]) in source for r in sample)


def test_sample_is_reproducible(sample):
    make_sample = _load("honing_make_sample", SAMPLE_DIR / "make_sample.py")
    intents, regenerated = make_sample.build()
    assert regenerated == sample and intents == list(common.SAMPLE_INTENTS)


def test_attribution_present():
    text = (SAMPLE_DIR / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for needle in ("PolyAI", "Casanueva", "CC BY 4.0", "creativecommons.org/licenses/by/4.0", "2003.04807"):
        assert needle in text
    assert "Attribution 4.0 International" in (SAMPLE_DIR / "LICENSE").read_text(encoding="utf-8")


def test_banking77_rows(rows):
    assert len(rows) > 9_900 and len({r["intent"] for r in rows}) == 77
    assert len({r["text"] for r in rows}) == len(rows)  # duplicates dropped


def _texts(split: list[dict]) -> set[str]:
    return {r["text"] for r in split}


@pytest.mark.parametrize(
    ("kwargs", "n_intents", "sizes"),
    [
        ({}, 10, (60, 40, 200)),
        ({"n_intents": 5, "seed": 3, "n_train": 25, "n_val": 10, "n_dev": 50}, 5, (25, 10, 50)),
        ({"intents": ["age_limit", "card_linking"], "n_train": 7, "n_val": 3, "n_dev": 11}, 2, (7, 3, 11)),
        ({"n_intents": 20, "seed": 9}, 20, (60, 40, 200)),
    ],
)
def test_subset_sizes_disjoint_balanced(rows, kwargs, n_intents, sizes):
    sub = common.banking77_subset(rows=rows, **kwargs)
    train, val, dev = sub["train"], sub["val"], sub["dev"]
    assert (len(train), len(val), len(dev)) == sizes
    assert len(sub["intents"]) == len(set(sub["intents"])) == n_intents
    assert not (_texts(train) & _texts(val) or _texts(train) & _texts(dev) or _texts(val) & _texts(dev))
    for split in (train, val, dev):
        assert len(_texts(split)) == len(split)
        assert {r["intent"] for r in split} <= set(sub["intents"])
        counts = Counter(r["intent"] for r in split)
        assert max(counts.values()) - min(counts.get(i, 0) for i in sub["intents"]) <= 1  # balanced


def test_subset_deterministic_and_seeded(rows):
    a = common.banking77_subset(rows=rows, seed=1)
    assert a == common.banking77_subset(rows=rows, seed=1)
    assert a == common.banking77_subset(seed=1)  # reads the CSV itself: same result
    assert a["train"] != common.banking77_subset(rows=rows, seed=2)["train"]
    assert a["intents"] == list(common.SAMPLE_INTENTS)


def test_subset_dev_is_stable_and_disjoint_from_sample(rows, sample):
    base = common.banking77_subset(rows=rows)
    bigger = common.banking77_subset(rows=rows, n_train=150, n_val=100)
    assert bigger["dev"] == base["dev"]  # dev does not move when train/val grow
    assert bigger["train"][:60] == base["train"]
    assert not _texts(base["dev"]) & _texts(sample)
    assert _texts(base["train"]) | _texts(base["val"]) <= _texts(sample)


def test_subset_rejects_impossible_requests(rows):
    with pytest.raises(ValueError):
        common.banking77_subset(rows=rows, n_intents=78)
    with pytest.raises(ValueError):
        common.banking77_subset(rows=rows, intents=["no_such_intent"])
    with pytest.raises(ValueError):
        common.banking77_subset(rows=rows, intents=["age_limit"], n_train=100, n_val=0, n_dev=100)


def test_gsm8k_rows():
    rows = common.gsm8k_rows()
    assert len(rows) == 7473
    assert rows[0]["final"] == "72" and "####" in rows[0]["answer"]


def test_data_dir_is_inside_the_repo_and_overridable(monkeypatch, tmp_path):
    monkeypatch.delenv("HONING_DATA_DIR", raising=False)
    assert common.data_dir() == ROOT / "data"
    monkeypatch.setenv("HONING_DATA_DIR", str(tmp_path))
    assert common.data_dir() == tmp_path.resolve()
    with pytest.raises(FileNotFoundError, match="HONING_DATA_DIR"):
        common.banking77_rows()


# The checksums data/README.md publishes: the shipped files are the sources, byte for byte.
DATA_FILES = {
    "banking77/train.csv": "b06e26ac675513959a63135f11b94ea7786ed02da65db93a5650d8838cbc664b",
    "banking77/categories.json": "53261da888122daf2d120d925458631d9619e15d82e56052e7a42e535ce32b63",
    "gsm8k/train.jsonl": "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
}


@pytest.mark.parametrize("name", sorted(DATA_FILES))
def test_shipped_data_matches_its_published_checksum(name):
    data = ROOT / "data"
    assert hashlib.sha256((data / name).read_bytes()).hexdigest() == DATA_FILES[name]
    assert DATA_FILES[name] in (data / "README.md").read_text(encoding="utf-8")


def test_shipped_data_carries_its_licences():
    data = ROOT / "data"
    assert "Attribution 4.0 International" in (data / "banking77" / "LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in (data / "gsm8k" / "LICENSE").read_text(encoding="utf-8")
    readme = (data / "README.md").read_text(encoding="utf-8")
    for needle in ("PolyAI", "Casanueva", "CC BY 4.0", "openai/grade-school-math", "MIT"):
        assert needle in readme
    categories = json.loads((data / "banking77" / "categories.json").read_text(encoding="utf-8"))
    assert len(categories) == 77 and set(categories) == {r["intent"] for r in common.banking77_rows()}


def test_write_json_and_print_table(tmp_path):
    path = common.write_json(tmp_path / "out" / "r.json", {"acc": 0.5, "n": 3})
    assert json.loads(path.read_text()) == {"acc": 0.5, "n": 3}
    buf = io.StringIO()
    text = common.print_table(
        [{"method": "zero-shot", "acc": 0.5}, {"method": "labeled", "acc": 0.75, "n": 2}],
        ["method", "acc", "n"],
        file=buf,
    )
    assert buf.getvalue() == text + "\n"
    lines = text.splitlines()
    assert lines[0].split() == ["method", "acc", "n"] and set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["zero-shot", "0.500"] and lines[3].split() == ["labeled", "0.750", "2"]
