"""The `honing` command: listing, compiling, inspecting, exporting, and one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from honing.cli import main
from honing.testing.contract import CONTRACT_DATA

PROGRAM = str(Path(__file__).parent / "programs" / "classify.py") + ":program"


@pytest.fixture
def trainset(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"text": t, "intent": i} for t, i in CONTRACT_DATA]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path / "cache"))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_optimizers_human_and_json(capsys):
    code, out, _ = run(capsys, "list-optimizers")
    assert code == 0
    line = next(l for l in out.splitlines() if l.startswith("LabeledFewShot"))
    assert "honing-labeled 0.1.0" in line and "demos" in line
    code, out, _ = run(capsys, "list-optimizers", "--json")
    entries = {e["name"]: e for e in json.loads(out)}
    assert entries["LabeledFewShot"]["distribution"] == "honing-labeled"
    assert entries["LabeledFewShot"]["version"] == "0.1.0"


def test_compile_inspect_export(capsys, tmp_path, trainset):
    out_file = tmp_path / "out.json"
    code, out, err = run(capsys, "compile", PROGRAM, "--optimizer", "LabeledFewShot", "--trainset", str(trainset),
                         "--param", "k=3", "--seed", "1", "-o", str(out_file))
    assert code == 0, err
    saved = json.loads(out_file.read_text())
    assert saved["optimizer"]["parameters"] == {"k": 3, "sample": True, "seed": 1}
    assert len(saved["predictors"][0]["demos"]) == 3

    code, out, _ = run(capsys, "inspect", str(out_file))
    assert code == 0
    assert "optimizer LabeledFewShot (seed 1)" in out
    assert "Classify the banking customer query into one intent." in out
    assert "Text: {text}\nIntent:" in out
    for demo in saved["predictors"][0]["demos"]:
        assert f"Text: {demo['text']}\nIntent: {demo['intent']}" in out

    code, out, _ = run(capsys, "export", str(out_file), "--format", "messages", "--input", "text=my pin is blocked")
    exported = json.loads(out)
    assert exported["adapter"] == "transcript"
    assert exported["messages"][0]["content"].endswith("Text: my pin is blocked\nIntent:")
    code, text, _ = run(capsys, "export", str(out_file), "--format", "text", "--input", "text=hi",
                        "--adapter", "chat")
    assert "<text>hi</text>" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compile", PROGRAM, "--optimizer", "LabeledFewshot", "--trainset", "{train}", "-o", "x.json"],
         "did you mean 'LabeledFewShot'"),
        (["compile", "nowhere.py:program", "--optimizer", "LabeledFewShot", "--trainset", "{train}", "-o", "x.json"],
         "does not exist"),
        (["compile", PROGRAM, "--optimizer", "LabeledFewShot", "--trainset", "{bad}", "-o", "x.json"],
         "bad.jsonl:2: missing input field(s) 'text'"),
        (["compile", PROGRAM, "--optimizer", "LabeledFewShot", "--trainset", "{train}", "--param", "k=-2",
          "-o", "x.json"], "k must be a non-negative integer"),
        (["inspect", "{garbage}"], "not valid JSON"),
        (["evaluate", PROGRAM, "--devset", "{train}", "--metric", "nope"], "unknown metric 'nope'"),
    ],
)
def test_user_errors_exit_2_with_one_line(capsys, tmp_path, trainset, argv, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "intent": "pin_blocked"}\n{"query": "no text"}\n')
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    argv = [a.format(train=trainset, bad=bad, garbage=garbage) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "honing.cli", "--debug", "inspect", str(garbage)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "LoadError" in proc.stderr


def test_help_warns_that_program_imports_code():
    proc = subprocess.run([sys.executable, "-m", "honing.cli", "compile", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert "IMPORTS AND RUNS" in proc.stdout
