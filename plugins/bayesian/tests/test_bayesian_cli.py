"""The `honing` command with this package's optimizers: listing, --dry-run, --storage/--study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from honing.cli import main
from honing.testing.contract import CONTRACT_DATA

PROGRAM = '''
import typing
import honing as hn

class Classify(hn.Signature):
    """Classify the banking customer query into one intent."""
    text: str = hn.InputField()
    intent: typing.Literal["card_arrival", "exchange_rate", "pin_blocked", "unknown"] = hn.OutputField()

program = hn.Predict(Classify)
'''


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "intent": i}) + "\n" for t, i in CONTRACT_DATA))
    return {"program": program, "train": train, "out": tmp_path / "out.json"}


def test_list_optimizers_shows_both(capsys):
    assert main(["list-optimizers"]) == 0
    out = capsys.readouterr().out
    assert "SignatureOptimizer (honing-bayesian" in out and "BayesianSignatureOptimizer (honing-bayesian" in out


def test_dry_run_prints_the_plan_with_a_price_and_saves_nothing(files, capsys):
    code = main(["compile", f"{files['program']}:program", "--optimizer", "BayesianSignatureOptimizer",
                 "--trainset", str(files["train"]), "--valset", str(files["train"]), "--metric", "exact_match",
                 "--lm", "openai/gpt-4o-mini", "--dry-run", "-o", str(files["out"])])
    assert code == 0
    out = capsys.readouterr().out
    assert "dry run, nothing sent" in out and "LM calls" in out
    cost = float(out.split("cost $", 1)[1].split()[0])
    assert cost > 0  # a priced model: litellm's price, before anything is sent
    assert not files["out"].exists()


def test_dry_run_on_an_optimizer_without_it_is_a_clear_error(files, capsys):
    code = main(["compile", f"{files['program']}:program", "--optimizer", "SignatureOptimizer",
                 "--trainset", str(files["train"]), "--metric", "exact_match", "--lm", "openai/gpt-4o-mini",
                 "--dry-run", "-o", str(files["out"])])
    assert code == 2
    assert "SignatureOptimizer does not support --dry-run" in capsys.readouterr().err


@pytest.mark.server
def test_compile_with_storage_and_study_then_join_it(files, tmp_path, monkeypatch, capsys):
    from bayesian_worker import server_responder
    from honing.testing.server import OpenAICompatServer

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    with OpenAICompatServer(server_responder) as server:
        for name, value in (("OPENAI_API_BASE", server.url), ("OPENAI_BASE_URL", server.url), ("OPENAI_API_KEY", "x")):
            monkeypatch.setenv(name, value)
        command = ["compile", f"{files['program']}:program", "--optimizer", "BayesianSignatureOptimizer",
                   "--trainset", str(files["train"]), "--valset", str(files["train"]), "--metric", "exact_match",
                   "--lm", "openai/test", "--param", "auto=null", "--param", "num_candidates=3",
                   "--param", "num_trials=3", "--storage", storage, "--study", "cli", "-o", str(files["out"])]
        assert main(command) == 0
        assert "compiled with BayesianSignatureOptimizer, score" in capsys.readouterr().out
        sent = server.count
        assert sent > 0
        assert main(command) == 0  # a second worker joining the finished study
        assert server.count == sent  # sends nothing: every trial is done
    saved = json.loads(files["out"].read_text())
    assert "candidates read from the study 'cli'" in json.dumps(saved)


def test_storage_flag_on_an_optimizer_without_it_is_a_clear_error(files, capsys):
    code = main(["compile", f"{files['program']}:program", "--optimizer", "SignatureOptimizer",
                 "--trainset", str(files["train"]), "--metric", "exact_match", "--lm", "openai/gpt-4o-mini",
                 "--storage", "sqlite:///x.db", "--study", "s", "-o", str(files["out"])])
    assert code == 2
    assert "SignatureOptimizer does not support --storage, --study" in capsys.readouterr().err


def test_unreachable_storage_from_the_command_line_is_one_line_before_any_call(files, capsys):
    code = main(["compile", f"{files['program']}:program", "--optimizer", "BayesianSignatureOptimizer",
                 "--trainset", str(files["train"]), "--metric", "exact_match", "--lm", "openai/gpt-4o-mini",
                 "--storage", "postgresql://honing:secret@127.0.0.1:9/x", "--study", "s", "-o", str(files["out"])])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("honing: error: BayesianSignatureOptimizer: cannot open the study storage "
                          "postgresql://honing:***@127.0.0.1:9/x")
    assert "secret" not in err and err.count("\n") == 1
