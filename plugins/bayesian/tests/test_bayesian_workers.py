"""Real worker processes sharing one study on a real PostgreSQL server (the one `.ci/test` starts). The
LM is the loopback OpenAI-compatible server of this process, so every request of every worker is
counted, and each worker's API key tells the server which worker sent it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from honing.testing.server import OpenAICompatServer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bayesian_worker import server_responder

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.postgres]


def start_worker(config: dict[str, Any], cache: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HONING_CACHE_DIR": str(cache), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    handle = log.open("wb")
    return subprocess.Popen([sys.executable, str(HERE / "bayesian_worker.py"), json.dumps(config)], env=env,
                            stdout=handle, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen[bytes], log: Path, timeout: float = 150) -> None:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"worker timed out:\n{log.read_text(errors='replace')[-3000:]}") from None
    assert code == 0, f"worker failed ({code}):\n{log.read_text(errors='replace')[-3000:]}"


def stored_trials(storage: str, study: str) -> list[Any]:
    import optuna
    from honing.optimizers.kit.storage import with_driver

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study, storage=with_driver(storage)).get_trials(deepcopy=False)


def wait_for(condition: Any, timeout: float, what: str, *, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def is_setup_request(body: dict[str, Any]) -> bool:
    system = body["messages"][0]["content"]
    return system.startswith(("You improve instructions", "Here are examples", "Summarize these observations"))


def sent_by(server: OpenAICompatServer, key: str) -> list[str]:
    """The chat request bodies one worker (by its API key) sent."""
    return [json.dumps(r.body, sort_keys=True) for r in server.requests
            if r.path.endswith("/chat/completions") and r.headers.get("authorization") == f"Bearer {key}"]


def expected_choice(trials: list[Any]) -> Any:
    """The optimizer's rule, from the storage: the best full evaluation that clearly beats the baseline
    (paired, confidence_z=1), else the baseline."""
    from honing.plugin_api import clear_gain

    fulls = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs["kind"] == "full"]
    baseline = next(t for t in fulls if t.user_attrs.get("baseline"))
    scores = lambda t: t.user_attrs["evaluation"].get("example_scores")
    clear = [t for t in fulls if t.value > baseline.value and clear_gain(scores(t), scores(baseline), 1.0)]
    return max(clear, key=lambda t: (t.value, -t.number)) if clear else baseline


def test_two_workers_share_one_study_and_a_killed_one_resumes(fresh_postgres_db, tmp_path):
    """Two workers start at once on a fresh database (racing to create Optuna's tables and the study),
    both run trials; one is killed with SIGKILL mid-study and started again while the other goes on."""
    storage, study = fresh_postgres_db, f"two-{uuid.uuid4().hex[:8]}"
    cache, logs = tmp_path / "cache", [tmp_path / f"{w}.log" for w in ("a", "b", "a2")]
    with OpenAICompatServer(server_responder, latency=0.01) as server:
        config = {"server": server.url, "storage": storage, "study": study, "num_trials": 10}
        together = {"go": str(tmp_path / "go")}
        a = start_worker({**config, **together, "ready": str(tmp_path / "a.ready"), "api_key": "a",
                          "out": str(tmp_path / "a.json")}, cache, logs[0])
        b = start_worker({**config, **together, "ready": str(tmp_path / "b.ready"), "api_key": "b",
                          "out": str(tmp_path / "b.json")}, cache, logs[1])
        wait_for(lambda: (tmp_path / "a.ready").exists() and (tmp_path / "b.ready").exists(), 120,
                 "both workers to start", logs=logs)
        (tmp_path / "go").touch()

        def both_contributed() -> bool:
            try:
                done = [t for t in stored_trials(storage, study) if t.state.name == "COMPLETE"]
            except Exception:  # noqa: BLE001 - the study or its tables do not exist yet
                return False
            return len({t.user_attrs.get("worker") for t in done if t.user_attrs.get("worker")}) >= 2

        wait_for(both_contributed, 120, "a finished trial from each worker", logs=logs)
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        before = {t.number: (t.value, t.user_attrs.get("evaluation")) for t in stored_trials(storage, study)
                  if t.state.name == "COMPLETE"}
        sent_by_a = set(sent_by(server, "a"))
        a2 = start_worker({**config, "api_key": "a2", "out": str(tmp_path / "a2.json")}, cache, logs[2])
        finish(b, logs[1])
        finish(a2, logs[2])
        sent_by_a2 = sent_by(server, "a2")
    after = {t.number: t for t in stored_trials(storage, study)}
    done = [t for t in after.values() if t.state.name == "COMPLETE"]
    assert sum(1 for t in done if t.user_attrs["kind"] == "minibatch") >= 10
    # every trial finished before the kill is kept as it was
    for number, (value, evaluation) in before.items():
        assert after[number].state.name == "COMPLETE"
        assert (after[number].value, after[number].user_attrs.get("evaluation")) == (value, evaluation)
    # the killed worker's running trial was marked failed, not left running; a full evaluation it was
    # doing was done again (enqueued again, unless another worker had the same one)
    assert not [t for t in after.values() if t.state.name == "RUNNING"]
    for failed in (t for t in after.values() if t.state.name == "FAIL"):
        if failed.user_attrs.get("kind") == "full":
            assert any(t.user_attrs.get("kind") == "full" and t.user_attrs.get("key") == failed.user_attrs["key"]
                       for t in done), (failed.number, failed.user_attrs)
    # the candidates were built once; the restarted worker read them, and repeated none of the killed
    # one's requests except at most the one in flight at the kill (its answer never reached the cache)
    results = {w: json.loads((tmp_path / f"{w}.json").read_text()) for w in ("b", "a2")}
    assert any("candidates read from the study" in n for n in results["a2"]["notes"])
    assert not [body for body in sent_by_a2 if is_setup_request(json.loads(body))]
    assert len(set(sent_by_a2) & sent_by_a) <= 1
    # every trial is readable in the storage: configuration, instruction text, demo ids, score
    for t in done:
        assert t.user_attrs["instructions"]["self"] and "self" in t.user_attrs["demos"]
        assert t.user_attrs["config"] == t.params
    # the final choice is the best stored full evaluation (by the optimizer's rule); both workers agree
    best = expected_choice(list(after.values()))
    assert {r["trial"] for r in results.values()} == {best.number}
    assert all(r["score"] == best.value for r in results.values())


def test_postgres_study_with_other_parameters_is_refused(postgres_url):
    import honing as hn
    from bayesian_helpers import GOOD, ScriptedLM, devset, trainset
    from honing.testing.contract import ContractClassify, intent_match
    from honing_bayesian import BayesianSignatureOptimizer

    study = f"mix-{uuid.uuid4().hex[:8]}"

    def compile_with(**overrides: Any) -> Any:
        opt = BayesianSignatureOptimizer(**{"metric": intent_match, "auto": None, "num_candidates": 3,
                                            "num_trials": 3, "storage": postgres_url, "study_name": study,
                                            **overrides})
        return opt.compile(hn.Predict(ContractClassify), trainset=trainset(), valset=devset())

    with hn.context(lm=ScriptedLM([GOOD])):
        assert compile_with().compile_record.score == 1.0
    lm = ScriptedLM([GOOD])
    with hn.context(lm=lm), pytest.raises(hn.OptimizerError, match=r"max_labeled_demos: 4 in the study, 2 now"):
        compile_with(max_labeled_demos=2)
    assert lm.requests == []
    # the same parameters continue it: nothing new to do, nothing sent
    with hn.context(lm=lm):
        assert compile_with().compile_record.score == 1.0
    assert lm.requests == []

