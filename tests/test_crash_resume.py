"""Crash and resume with a real `honing compile` subprocess against the loopback server (which counts
every call): SIGKILL at a random moment after some candidates or trials finished, then ``--resume``
sends ZERO calls for work already finished (the durable cache and the run log cover it; at most the one
call in flight at the kill is sent again). Ctrl-C (SIGINT) stops cleanly: exit status 130, the run log
flushed and ending in an "interrupted" event, a message saying how to resume, and the resumed run
repeats nothing.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import reliability_cases as rc
from honing.runs import read_events
from honing.testing.server import OpenAICompatServer

pytestmark = [pytest.mark.server, pytest.mark.slow]

TESTS_DIR = Path(__file__).resolve().parent
HONING = Path(sys.executable).with_name("honing")

PROGRAM = f"""
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})
import honing as hn
from reliability_cases import Classify

def make_program():
    return hn.Predict(Classify)
"""

#: optimizer -> (CLI parameters, the run-log event of one finished step, the most steps to wait for
#: before the kill: fewer than the compile has; the Bayesian search logs each distinct configuration once)
OPTIMIZERS = {
    "BootstrapFewShotWithRandomSearch": (
        {"num_candidate_programs": 6, "max_bootstrapped_demos": 2, "max_labeled_demos": 4, "num_threads": 1},
        "candidate", 6),
    "BayesianSignatureOptimizer": (
        {"auto": None, "num_candidates": 3, "num_trials": 8, "max_bootstrapped_demos": 2, "max_labeled_demos": 3,
         "minibatch": False, "confidence_z": 0.0, "num_threads": 1},
        "trial", 2),
}


def write_inputs(tmp_path: Path) -> dict[str, Path]:
    paths = {"program": tmp_path / "program.py", "train": tmp_path / "train.jsonl", "dev": tmp_path / "dev.jsonl"}
    paths["program"].write_text(PROGRAM)
    for key, rows in (("train", rc.DATA), ("dev", rc.DEV)):
        paths[key].write_text("".join(json.dumps({"text": t, "intent": i}) + "\n" for t, i in rows))
    return paths


def command(name: str, paths: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    params, _, _ = OPTIMIZERS[name]
    cmd = [str(HONING), "compile", f"{paths['program']}:make_program", "--optimizer", name,
           "--trainset", str(paths["train"]), "--valset", str(paths["dev"]), "--metric", "exact_match",
           "--lm", "openai/test-model", "--seed", "0", "--run-dir", str(run_dir), "-o", str(run_dir / "out.json")]
    for key, value in params.items():
        cmd += ["--param", f"{key}={json.dumps(value)}"]
    return cmd + list(extra)


def environment(server: OpenAICompatServer, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "HONING_"))}
    env.update(OPENAI_API_BASE=server.url, OPENAI_API_KEY="sk-test", HONING_CACHE_DIR=str(cache),
               LITELLM_LOCAL_MODEL_COST_MAP="True", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def steps_done(run_dir: Path, event: str) -> int:
    path = run_dir / "events.jsonl"
    return sum(1 for e in read_events(path) if e.get("event") == event) if path.exists() else 0


def start_and_wait(cmd: list[str], env: dict[str, str], run_dir: Path, event: str, steps: int,
                   timeout: float = 120) -> subprocess.Popen:
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while steps_done(run_dir, event) < steps:
        if process.poll() is not None:
            _out, err = process.communicate()
            pytest.fail(f"the compile ended (status {process.returncode}) before {steps} {event}s:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {steps} {event}s after {timeout} s")
        time.sleep(0.01)
    return process


def bodies(requests: list) -> list[str]:
    return [json.dumps(r.body, sort_keys=True) for r in requests if r.path == "/v1/chat/completions"]


def resume_and_count(cmd: list[str], env: dict[str, str], server: OpenAICompatServer,
                     why: str = "") -> tuple[list[str], str]:
    before = len(server.requests)
    try:
        done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=240, check=False)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-3000:]
        pytest.fail(f"the resumed compile did not finish in 240 s ({len(server.requests) - before} calls sent; {why}):\n"
                    f"{tail.decode(errors='replace') if isinstance(tail, bytes) else tail}")
    assert done.returncode == 0, done.stderr[-3000:]
    return bodies(server.requests[before:]), done.stdout


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_sigkill_then_resume_repeats_no_finished_call(name, tmp_path):
    paths = write_inputs(tmp_path)
    _, event, total = OPTIMIZERS[name]
    seed = os.environ.get("HONING_KILL_SEED", str(time.time_ns()))  # printed on failure, to replay it
    rng = random.Random(seed)
    kill_after = rng.randint(1, total)
    run_dir = tmp_path / "run"
    with OpenAICompatServer(responder=rc.demo_responder, latency=0.02, max_lifetime=300) as server:
        env = environment(server, tmp_path / "cache")
        cmd = command(name, paths, run_dir)
        process = start_and_wait(cmd, env, run_dir, event, kill_after)
        pause = rng.uniform(0.0, 0.3)
        time.sleep(pause)  # a random moment after that step
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        first = bodies(server.requests)
        finished_steps = steps_done(run_dir, event)
        assert not (run_dir / "out.json").exists(), "the compile finished before the kill: nothing to test"
        why = f"killed {pause:.2f} s after {kill_after} {event}s, HONING_KILL_SEED={seed}"
        second, stdout = resume_and_count(cmd, env, server, why)
    repeated = [b for b in second if b in set(first)]
    # only the call in flight at the kill (its reply never reached the cache) may be sent again
    assert len(repeated) <= 1, f"{len(repeated)} calls repeated ({why})"
    if repeated:
        assert repeated[0] == first[-1], "a repeated call was not the one in flight at the kill"
    assert "compiled with" in stdout
    events = read_events(run_dir / "events.jsonl")
    assert [e["event"] for e in events].count("resume") == 1
    assert events[-1]["event"] in ("finish", "compiled")
    assert steps_done(run_dir, event) > finished_steps
    assert (run_dir / "out.json").exists()


@pytest.mark.parametrize("name", ["BootstrapFewShotWithRandomSearch"])
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(name, tmp_path):
    paths = write_inputs(tmp_path)
    _, event, _ = OPTIMIZERS[name]
    run_dir = tmp_path / "run"
    with OpenAICompatServer(responder=rc.demo_responder, latency=0.02, max_lifetime=300) as server:
        env = environment(server, tmp_path / "cache")
        cmd = command(name, paths, run_dir, "--param", "display_progress=true")
        process = start_and_wait(cmd, env, run_dir, event, 2)
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=60)
        first = bodies(server.requests)
        assert process.returncode == 130, err[-3000:]
        assert "Traceback" not in err
        assert "--resume" in err and str(run_dir) in err, err[-1000:]
        # the progress bars were closed before the message: it starts on a line of its own
        message_line = next(line for line in err.splitlines() if "--resume" in line)
        assert message_line.startswith(f"{name}: interrupted"), message_line
        lines = (run_dir / "events.jsonl").read_text().splitlines()
        events = [json.loads(line) for line in lines]  # every line complete: the log was flushed
        assert events[-1]["event"] == "interrupted"
        assert steps_done(run_dir, event) >= 2 and not (run_dir / "out.json").exists()
        second, _ = resume_and_count(cmd, env, server)
    repeated = [b for b in second if b in set(first)]
    assert len(repeated) <= 1, f"{len(repeated)} calls repeated after Ctrl-C"


def test_bayesian_resume_after_a_kill_between_creating_a_trial_and_naming_its_worker(tmp_path):
    """The narrowest kill: Optuna created the trial (RUNNING) but the process died before `objective` wrote
    which worker runs it. Such an orphan never gets a heartbeat either; the resumed run must fail it and
    finish instead of waiting for it forever."""
    import optuna

    name = "BayesianSignatureOptimizer"
    paths = write_inputs(tmp_path)
    run_dir = tmp_path / "run"
    with OpenAICompatServer(responder=rc.demo_responder, latency=0.02, max_lifetime=300) as server:
        env = environment(server, tmp_path / "cache")
        cmd = command(name, paths, run_dir)
        process = start_and_wait(cmd, env, run_dir, "trial", 1)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        first = bodies(server.requests)
        storage = f"sqlite:///{run_dir / 'study.db'}"
        (study_name,) = optuna.get_all_study_names(storage)
        orphan = optuna.load_study(study_name=study_name, storage=storage).ask()  # RUNNING, no worker, no beat
        second, stdout = resume_and_count(cmd, env, server, "an orphaned RUNNING trial in the study")
    assert "compiled with" in stdout
    states = {t.number: t.state for t in optuna.load_study(study_name=study_name, storage=storage).trials}
    assert states[orphan.number] == optuna.trial.TrialState.FAIL
    assert len([b for b in second if b in set(first)]) <= 1
