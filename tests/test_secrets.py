"""A sentinel API key used through every path (errors, retries, debug logs, cache, run log, saved
program, inspect, export) appears in none of their outputs or files."""

from __future__ import annotations

import logging
import typing
from pathlib import Path

import pytest

import honing as hn
from honing.cli import main as cli_main
from honing.lm.types import LMRequest
from honing.runs import RunLog

pytestmark = pytest.mark.server

SENTINEL = "sk-SENTINEL-7f3a9c2e5b1d4e8f"


class Classify(hn.Signature):
    """Pick the intent."""

    text: str = hn.InputField()
    intent: typing.Literal["card_arrival", "pin_blocked"] = hn.OutputField()


def tagged(request: dict) -> str:
    return "<intent>pin_blocked</intent>"


def all_bytes(*roots: Path) -> list[tuple[Path, bytes]]:
    files = []
    for root in roots:
        paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        files += [(p, p.read_bytes()) for p in paths]
    return files


def test_the_sentinel_key_leaks_nowhere(make_openai_server, honing_cache_dir, tmp_path, capsys, monkeypatch):
    log_file = tmp_path / "debug.log"
    handler = logging.FileHandler(log_file)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    texts: list[str] = []
    try:
        # 1. calls with transient faults (retried), then successes that are cached
        server = make_openai_server(responder=tagged, api_key=SENTINEL)
        lm = hn.LM("openai/test-model", api_key=SENTINEL, api_base=server.url, retry_base=0.01, retry_cap=0.05)
        server.script(["429", "500", "drop", "429_retry_after"])
        program = hn.Predict(Classify, lm=lm)
        assert program(text="my pin").intent == "pin_blocked"
        assert program(text="my pin").intent == "pin_blocked"  # a cache hit
        texts += [repr(lm), str(lm.to_state()), str(list(lm.history)), repr(program)]

        # 2. a server that rejects the key and echoes it in its error message
        wrong = make_openai_server(responder=tagged, api_key="sk-other-key")
        bad = hn.LM("openai/test-model", api_key=SENTINEL, api_base=wrong.url, retry_base=0.01)
        with pytest.raises(hn.HoningError) as info:
            bad(LMRequest(prompt="hello"))
        texts += [str(info.value), repr(info.value), "".join(map(str, info.value.args))]
        if info.value.__cause__ is not None:
            texts.append(str(info.value.__cause__))

        # 3. Evaluate records per-example errors
        result = hn.Evaluate(devset=[hn.Example(text="x", intent="pin_blocked").with_inputs("text")],
                             metric=lambda e, p: e.intent == p.intent)(hn.Predict(Classify, lm=bad))
        texts += [r.error or "" for r in result.results]

        # 4. a run log and a saved program with the LM attached
        run = RunLog(tmp_path / "run", optimizer="Test", parameters={"lm": lm.to_state()})
        run.event("candidate", key="c0", score=1.0, lm=lm.to_state())
        saved = tmp_path / "program.json"
        program.save(saved)

        # 5. inspect and export
        assert cli_main(["inspect", str(saved)]) == 0
        assert cli_main(["export", str(saved), "--input", "text=hi"]) == 0
        out, err = capsys.readouterr()
        texts += [out, err]
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()

    assert server.count >= 5 and wrong.count >= 1  # the paths above really ran
    assert log_file.stat().st_size > 0, "debug logging must have produced lines to check"
    leaks = [t[:200] for t in texts if SENTINEL in t]
    leaks += [str(p) for p, data in all_bytes(honing_cache_dir, tmp_path) if SENTINEL.encode() in data]
    assert leaks == []
