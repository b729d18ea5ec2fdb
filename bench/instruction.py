"""The instruction optimizers (honing-bayesian) against zero-shot and random search, on one split.

    .venv/bin/python bench/instruction.py [--seed 0] [--quick] [--postgres URL] [--workers-lm server|local]

On a 10-intent Banking77 subset (60 train / 40 val / 200 dev) with the embedded SmolLM2-135M as task and
prompt model, it compiles the same student with:

- zero-shot (the student as it is);
- SignatureOptimizer (coordinate ascent over the instruction);
- BayesianSignatureOptimizer (instructions x demo sets, TPE; ``num_candidates=3, num_trials=6, auto=None``);
- BootstrapFewShotWithRandomSearch from honing-bootstrap, when that package is installed;

and reports dev accuracy, the compile's LM calls and tokens (each method starts from an empty LM cache,
so calls are what it really sends), and wall time. Then the scale-out: trials per minute of one and of
two BayesianSignatureOptimizer worker processes sharing one study on PostgreSQL (``--postgres`` or
$HONING_TEST_POSTGRES_URL), measured from the trials' own start/finish times in the storage. The
workers' LM is, by default, a loopback OpenAI-compatible server answering after a fixed latency (what
scale-out is for: a hosted LM), or the embedded model with ``--workers-lm local``.

Prints a table and writes bench/out/instruction.json. ``--quick``: 100 dev examples, smaller searches.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import typing
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import banking77_subset, out_path, print_table, write_json

MODEL = "local/smollm2-135m"


def examples(rows: list[dict[str, str]]) -> list[Any]:
    import honing as hn

    return [hn.Example(**r).with_inputs("text") for r in rows]


def make_student(intents: list[str]) -> Any:
    import honing as hn
    from honing.signatures import Field, make_signature

    signature = make_signature([Field("text", "input", str), Field("intent", "output", typing.Literal[tuple(intents)])],
                               instructions="Classify the banking customer query into one intent.", name="Classify")
    return hn.Predict(signature)


def intent_match(example: Any, prediction: Any, trace: Any = None) -> bool:
    return example.intent == prediction.intent


def fresh_lm(model: str) -> Any:
    """An LM with an empty cache of its own, so each method's calls are what it really sends."""
    import honing as hn
    from honing.lm.cache import DiskCache

    return hn.LM(model, cache=DiskCache(tempfile.mkdtemp(prefix="honing-bench-cache-")))


def run_method(name: str, make_optimizer: Any, data: dict[str, Any], model: str) -> dict[str, Any]:
    import honing as hn

    student = make_student(data["intents"])
    train, val, dev = examples(data["train"]), examples(data["val"]), examples(data["dev"])
    lm = fresh_lm(model)
    row: dict[str, Any] = {"method": name}
    with hn.context(lm=lm):
        started = time.perf_counter()
        if make_optimizer is None:
            program, record = student, None
        else:
            program = make_optimizer().compile(student, trainset=train, valset=val)
            record = program.compile_record
        row["compile_s"] = round(time.perf_counter() - started, 1)
        result = hn.Evaluate(devset=dev, metric=intent_match)(program)
    row["dev_acc"] = round(result.score, 3)
    if record is not None:
        row.update({"val_score": round(record.score, 3) if record.score is not None else None,
                    "calls": record.calls, "tokens": record.prompt_tokens + record.completion_tokens,
                    "cost": record.cost, "notes": list(record.notes)})
        if record.name == "BayesianSignatureOptimizer":
            trials = [c for c in record.candidates if c["kind"] == "minibatch" or not c.get("baseline")]
            row["trials_per_min"] = round(len(trials) / max(row["compile_s"], 1e-9) * 60, 2)
    else:
        row.update({"val_score": None, "calls": 0, "tokens": 0, "cost": 0.0})
    row["instruction"] = program.predictors()[0].signature.instructions
    row["demos"] = len(program.predictors()[0].demos)
    print(f"  {name}: dev {row['dev_acc']:.3f}, {row['calls']} calls, {row['compile_s']}s", flush=True)
    return row


# ----------------------------------------------------------------------------------------------------
# scale-out: worker processes on one PostgreSQL study

def worker_main(config: dict[str, Any]) -> None:
    """One worker process (``--worker JSON``)."""
    import honing as hn
    from honing_bayesian import BayesianSignatureOptimizer

    data = banking77_subset(10, seed=config["seed"], n_train=60, n_val=40, n_dev=0)
    if config["lm"] == "local":
        lm = hn.LM(MODEL)
    else:
        lm = hn.LM("openai/bench", api_base=config["server"], api_key="x", num_retries=2)
    hn.configure(lm=lm)
    optimizer = BayesianSignatureOptimizer(intent_match, auto=None, num_candidates=3, num_trials=config["trials"],
                                           minibatch_size=10, minibatch_full_eval_steps=5, seed=config["seed"])
    optimizer.compile(make_student(data["intents"]), trainset=examples(data["train"]),
                      valset=examples(data["val"]), storage=config["storage"], study_name=config["study"])


def bench_responder(body: dict[str, Any]) -> str:
    """A hosted LM stand-in: proposals, summaries, and an intent taken from the demos or a default."""
    import re

    system, last = body["messages"][0]["content"], body["messages"][-1]["content"]
    if system.startswith("You improve instructions"):
        tip = re.search(r"<tip>(.*?)</tip>", last, re.DOTALL)
        return f"Classify the banking query into its intent; {(tip.group(1) if tip else '').lower()}"
    if system.startswith(("Here are examples", "Summarize these observations")):
        return "Short banking questions, each with one of ten intents."
    answers = re.findall(r"<intent>(.*?)</intent>", " ".join(m["content"] for m in body["messages"][1:-1]))
    return answers[len(last) % len(answers)] if answers else "card_arrival"


def trials_per_minute(storage: str, study: str) -> tuple[float, int]:
    import optuna
    from honing_bayesian.study import with_driver

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = [t for t in optuna.load_study(study_name=study, storage=with_driver(storage)).get_trials()
              if t.state.name == "COMPLETE" and t.datetime_start and t.datetime_complete]
    if not trials:
        return 0.0, 0
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    return round(len(trials) / max((end - start).total_seconds(), 1e-9) * 60, 2), len(trials)


def bench_workers(storage: str, n_workers: int, *, seed: int, trials: int, lm: str, latency: float) -> dict[str, Any]:
    from honing.testing.server import OpenAICompatServer

    study = f"bench-{n_workers}w-{uuid.uuid4().hex[:8]}"
    cache = tempfile.mkdtemp(prefix="honing-bench-workers-")
    with OpenAICompatServer(bench_responder, latency=latency, max_lifetime=7200) as server:
        config = {"seed": seed, "storage": storage, "study": study, "trials": trials, "lm": lm, "server": server.url}
        env = {**os.environ, "HONING_CACHE_DIR": cache, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        started = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(config)], env=env)
                 for _ in range(n_workers)]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - started
        requests = server.count
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")
    rate, n = trials_per_minute(storage, study)
    return {"workers": n_workers, "lm": lm if lm == "local" else f"loopback server, {latency * 1000:.0f} ms/request",
            "trials": n, "trials_per_min": rate, "wall_s": round(wall, 1), "requests": requests}


# ----------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="100 dev examples, smaller searches")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--postgres", default=os.environ.get("HONING_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL for the workers benchmark (default $HONING_TEST_POSTGRES_URL)")
    parser.add_argument("--workers-lm", choices=("server", "local"), default="server")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request of the loopback server")
    parser.add_argument("--skip-methods", action="store_true", help="only the workers benchmark")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(json.loads(args.worker))
        return
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import honing as hn  # noqa: F401 - fail early if the project is not installed
    from honing_bayesian import BayesianSignatureOptimizer, SignatureOptimizer

    n_dev = 100 if args.quick else 200
    data = banking77_subset(10, seed=args.seed, n_train=60, n_val=40, n_dev=n_dev)
    settings = {"model": args.model, "seed": args.seed, "intents": 10, "train": 60, "val": 40, "dev": n_dev,
                "quick": args.quick}
    print(f"instruction optimizers: {json.dumps(settings)}", flush=True)
    methods: list[tuple[str, Any]] = [
        ("zero-shot", None),
        ("SignatureOptimizer", lambda: SignatureOptimizer(intent_match, breadth=3, depth=1 if args.quick else 2)),
        ("BayesianSignatureOptimizer", lambda: BayesianSignatureOptimizer(intent_match, num_candidates=3,
                                                                         num_trials=6, auto=None)),
    ]
    try:
        from honing_bootstrap import BootstrapFewShotWithRandomSearch

        methods.append(("RandomSearch", lambda: BootstrapFewShotWithRandomSearch(
            intent_match, num_candidate_programs=2 if args.quick else 4, display_progress=False)))
    except ImportError:
        print("  (honing-bootstrap not installed: no RandomSearch row)", flush=True)
    rows = [] if args.skip_methods else [run_method(name, make, data, args.model) for name, make in methods]
    if rows:
        print_table(rows, ["method", "dev_acc", "val_score", "calls", "tokens", "compile_s", "trials_per_min",
                           "demos"])
    workers: list[dict[str, Any]] = []
    if args.postgres:
        trials = 10 if args.quick else 20
        for n in (1, 2):
            workers.append(bench_workers(args.postgres, n, seed=args.seed, trials=trials, lm=args.workers_lm,
                                         latency=args.latency))
            print(f"  {n} worker(s): {workers[-1]['trials_per_min']} trials/min", flush=True)
        print_table(workers, ["workers", "lm", "trials", "trials_per_min", "wall_s", "requests"])
    else:
        print("  (no --postgres / $HONING_TEST_POSTGRES_URL: no workers benchmark)", flush=True)
    path = write_json(out_path("instruction"), {"settings": settings, "methods": rows, "workers": workers})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
