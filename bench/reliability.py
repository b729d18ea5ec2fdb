"""Reliability, measured: faults survived per optimizer, calls sent against budgets, calls repeated after
a SIGKILL and a resume, loader fuzz cases, key leaks, and the 16-thread speed-up on a slow server.

Every optimizer in the plugin registry is run (the quick settings of `tests/reliability_cases.py`)
against the loopback OpenAI-compatible server of `honing.testing.server`:

1. faults: one compile with 20% of the calls faulty (every kind of `FAULT_KINDS`: 429 with and without
   Retry-After, 500, 503, timeouts, dropped connections, truncated JSON, empty content, garbage text), one
   without; both compiled programs are then scored on the devset with the faults off.
2. budgets: a compile under ``Budget(max_calls=N // 2)`` where N is what the full compile sends, and
   ``num_threads=16`` evaluations under ``Budget(max_calls=50)`` / ``Budget(max_tokens=...)``: what the
   server received against the limit.
3. kills: a real ``honing compile --run-dir`` subprocess SIGKILLed at a random moment after some
   candidates/trials finished, then ``--resume``: calls the resumed run sent again (the call in flight
   at the kill is the only one that may be repeated; finished work must cost nothing).
4. fuzz: the loader fuzz tests of `tests/test_hostile_files.py`, counting the cases hypothesis tried.
5. leaks: `tests/test_secrets.py` (a sentinel key through every path; every file produced is grepped).
6. speed-up: Evaluate of 96 examples with 1 and with 16 threads against a server with 50 ms latency.

Writes bench/RELIABILITY.md and bench/out/reliability.json.
Usage: .venv/bin/python bench/reliability.py [--kills 3] [--quick]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import out_path, print_table, write_json

FAULT_SEED = 7


def fault_script(n: int = 45) -> list[str]:
    from honing.testing.server import FAULT_KINDS

    return [FAULT_KINDS[(i // 5) % len(FAULT_KINDS)] if i % 5 == 1 else "ok" for i in range(n)]


def bench_faults(work: Path) -> list[dict]:
    import reliability_cases as rc
    from honing.testing.server import FaultPlan

    rows = []
    for case in rc.cases():
        faulty = rc.compile_case(case, work / case.name / "faulty", faults=FaultPlan(rate=0.2, seed=FAULT_SEED),
                                 script=fault_script(), evaluate=True)
        clean = rc.compile_case(case, work / case.name / "clean", evaluate=True)
        posts = [r for r in faulty.requests if r.method == "POST" and r.path in (
            "/v1/chat/completions", "/v1/completions", "/v1/embeddings")]
        kinds = Counter(faulty.faults)
        rows.append({
            "optimizer": case.name,
            "requests": len(posts),
            "faults injected": len(faulty.faults),
            "fault rate": round(len(faulty.faults) / len(posts), 3) if posts else 0.0,
            "kinds": ", ".join(f"{k}x{n}" for k, n in sorted(kinds.items())),
            "survived": faulty.error is None,
            "error": None if faulty.error is None else f"{type(faulty.error).__name__}: {faulty.error}"[:200],
            "example errors": faulty.record.errors if faulty.record else None,
            "score (faults)": faulty.clean_score,
            "score (clean)": clean.clean_score,
            "seconds": round(faulty.seconds, 2),
        })
        print(f"faults: {case.name}: {rows[-1]['faults injected']} faults, survived={rows[-1]['survived']}",
              file=sys.stderr)
    return rows


def bench_budgets(work: Path) -> list[dict]:
    import honing as hn
    import reliability_cases as rc

    rows = []
    for case in rc.cases():
        full = rc.compile_case(case, work / case.name / "full")
        needed = len(full.lm_requests)
        limit = needed // 2
        budget = hn.Budget(max_calls=limit)
        cut = rc.compile_case(case, work / case.name / "half", budget=budget)
        if cut.error is not None:
            outcome = type(cut.error).__name__
        else:
            outcome = "best so far, budget_limited" if cut.record.budget_limited else "complete"
        rows.append({"optimizer": case.name, "calls (no budget)": needed, "max_calls": limit,
                     "calls sent": len(cut.lm_requests), "within budget": len(cut.lm_requests) <= limit,
                     "outcome": outcome})
        print(f"budget: {case.name}: {rows[-1]}", file=sys.stderr)
    return rows


def bench_budget_threads() -> list[dict]:
    """16 threads racing for the last calls / tokens of a budget: the server must see exactly the limit."""
    import honing as hn
    import reliability_cases as rc
    from honing.errors import BudgetExceeded
    from honing.testing.server import OpenAICompatServer

    rows = []
    for limit_name, make_budget, request_max_tokens in (
            ("max_calls=50", lambda: hn.Budget(max_calls=50), None),
            ("max_tokens=3000", lambda: hn.Budget(max_tokens=3000), 20)):
        with OpenAICompatServer(responder=rc.demo_responder, latency=0.01) as server:
            lm = rc.server_lm(server.url, cache=False)
            program = hn.Predict(rc.Classify, lm=lm)
            if request_max_tokens is not None:
                program.max_tokens = request_max_tokens
            devset = [hn.Example(text=f"card {i} has not arrived", intent="card_arrival").with_inputs("text")
                      for i in range(200)]
            budget = make_budget()
            try:
                with hn.context(budget=budget):
                    hn.Evaluate(devset=devset, metric=rc.metric, num_threads=16)(program)
                stopped = "no"
            except BudgetExceeded:
                stopped = "BudgetExceeded"
            spent = budget.spent
            rows.append({"budget": limit_name, "threads": 16, "server received": server.count,
                         "budget spent calls": spent.calls, "budget spent tokens": spent.total_tokens,
                         "stopped": stopped,
                         "never over": (server.count == 50) if limit_name.startswith("max_calls")
                         else spent.total_tokens <= 3000})
    return rows


def bench_kills(work: Path, kills: int, seed: int) -> list[dict]:
    import reliability_cases as rc
    import test_crash_resume as crash
    from honing.runs import read_events
    from honing.testing.server import OpenAICompatServer

    rng = random.Random(seed)
    rows = []
    for name in sorted(crash.OPTIMIZERS):
        _, event, most = crash.OPTIMIZERS[name]
        for attempt in range(kills):
            tmp = work / f"{name}-{attempt}"
            tmp.mkdir(parents=True)
            paths = crash.write_inputs(tmp)
            run_dir = tmp / "run"
            kill_after = rng.randint(1, most)
            pause = rng.uniform(0.0, 0.3)
            row = {"optimizer": name, "kill": attempt + 1, "killed after": f"{kill_after} {event}s + {pause:.2f}s"}
            with OpenAICompatServer(responder=rc.demo_responder, latency=0.02, max_lifetime=900) as server:
                env = crash.environment(server, tmp / "cache")
                cmd = crash.command(name, paths, run_dir)
                process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                while crash.steps_done(run_dir, event) < kill_after and process.poll() is None:
                    time.sleep(0.01)
                time.sleep(pause)
                process.send_signal(signal.SIGKILL)
                process.wait()
                first = crash.bodies(server.requests)
                row["calls before kill"] = len(first)
                row["steps finished"] = crash.steps_done(run_dir, event)
                before = len(server.requests)
                started = time.perf_counter()
                try:
                    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600, check=False)
                    row["resumed"] = "ok" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr[-200:]}"
                except subprocess.TimeoutExpired:
                    row["resumed"] = "timed out (600 s)"
                row["resume seconds"] = round(time.perf_counter() - started, 1)
                second = crash.bodies(server.requests[before:])
            seen = set(first)
            repeated = [b for b in second if b in seen]
            in_flight = [b for b in repeated if first and b == first[-1]]
            row["calls after resume"] = len(second)
            row["calls repeated"] = len(repeated)
            row["repeated finished work"] = len(repeated) - len(in_flight[:1])
            events = read_events(run_dir / "events.jsonl") if (run_dir / "events.jsonl").exists() else []
            row["finished"] = bool(events) and events[-1].get("event") in ("finish", "compiled")
            rows.append(row)
            print(f"kill: {row}", file=sys.stderr)
    return rows


def bench_fuzz() -> dict:
    import test_hostile_files as hostile

    counted = {"cases": 0}
    original = hostile._load

    def counting(data):
        counted["cases"] += 1
        original(data)

    hostile._load = counting
    failures = []
    tests = [hostile.test_random_json_only_raises_load_error,
             hostile.test_a_valid_file_with_one_value_replaced_only_raises_load_error,
             hostile.test_truncated_files_only_raise_load_error, hostile.test_random_bytes_only_raise_load_error]
    try:
        for test in tests:
            try:
                test()
            except Exception as exc:  # noqa: BLE001 - reported in the table
                failures.append(f"{test.__name__}: {type(exc).__name__}: {exc}"[:300])
        for depth in (50, 199, 201, 10_000, 100_000):
            try:
                hostile.test_deep_nesting_is_refused_or_handled(depth)
            except Exception as exc:  # noqa: BLE001
                failures.append(f"deep nesting {depth}: {type(exc).__name__}")
        try:
            hostile.test_no_pickle_marshal_eval_or_exec_in_any_package()
            ast_ok = True
        except AssertionError as exc:
            ast_ok = False
            failures.append(f"AST walk: {exc}"[:300])
    finally:
        hostile._load = original
    return {"fuzz cases tried": counted["cases"], "non-LoadError outcomes": len(failures), "failures": failures,
            "files walked for pickle/eval/exec": len(hostile._python_files()), "AST check passed": ast_ok}


def bench_leaks() -> dict:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_secrets.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    return {"sentinel test": "passed" if done.returncode == 0 else "FAILED",
            "leaks found": 0 if done.returncode == 0 else "see output",
            "output": done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]}


def bench_speedup(n: int = 96, repeats: int = 3) -> dict:
    """1 vs 16 threads, `repeats` times (the machine may be shared: the best and the median are reported)."""
    import statistics

    import honing as hn
    from honing.testing.server import OpenAICompatServer

    def echo(request: dict) -> str:
        text = request["messages"][-1]["content"]
        return f"<m>{''.join(ch for ch in text.split('<n>')[-1] if ch.isdigit())}</m>"

    runs = []
    with OpenAICompatServer(responder=echo, latency=0.05) as server:
        lm = hn.LM("openai/test-model", api_base=server.url, api_key="sk-test", cache=False)
        program = hn.Predict("n -> m", lm=lm)
        examples = [hn.Example(n=str(i), m=str(i)).with_inputs("n") for i in range(n)]
        program(n="warm-up")  # litellm is imported on the first call: not part of the measurement
        for _ in range(repeats):
            times = {}
            for threads in (1, 16):
                started = time.perf_counter()
                result = hn.Evaluate(devset=examples, metric=lambda e, p: e.m == p.m, num_threads=threads)(program)
                times[threads] = time.perf_counter() - started
                assert result.score == 1.0
            runs.append({"1 thread s": round(times[1], 2), "16 threads s": round(times[16], 2),
                         "speed-up": round(times[1] / times[16], 1), "load average": round(os.getloadavg()[0], 1)})
    best = max(runs, key=lambda r: r["speed-up"])
    return {"examples": n, "latency ms": 50, **best, "median speed-up": statistics.median(r["speed-up"] for r in runs),
            "runs": runs, "target": 12.0, "cpus": os.cpu_count()}


def table(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    print_table(rows, columns, file=buffer)
    return buffer.getvalue()


def markdown(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        if isinstance(v, bool):
            return "yes" if v else "NO"
        if isinstance(v, float):
            return f"{v:.3f}"
        return "" if v is None else str(v).replace("|", "/")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=3, help="SIGKILL+resume rounds per optimizer")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill moments (default: time)")
    parser.add_argument("--quick", action="store_true", help="one kill per optimizer, no leak test")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else time.time_ns() % 10**9
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="honing-reliability-"))
    os.environ["HONING_CACHE_DIR"] = str(work / "cache")

    faults = bench_faults(work / "faults")
    budgets = bench_budgets(work / "budgets")
    threads = bench_budget_threads()
    kills = bench_kills(work / "kills", 1 if args.quick else args.kills, seed)
    fuzz = bench_fuzz()
    leaks = {"sentinel test": "skipped (--quick)"} if args.quick else bench_leaks()
    speed = bench_speedup()

    fault_cols = ["optimizer", "requests", "faults injected", "fault rate", "survived", "example errors",
                  "score (faults)", "score (clean)", "kinds"]
    budget_cols = ["optimizer", "calls (no budget)", "max_calls", "calls sent", "within budget", "outcome"]
    thread_cols = ["budget", "threads", "server received", "budget spent calls", "budget spent tokens", "stopped",
                   "never over"]
    kill_cols = ["optimizer", "kill", "killed after", "steps finished", "calls before kill", "calls after resume",
                 "calls repeated", "repeated finished work", "resumed", "finished"]
    for title, rows, cols in (("faults", faults, fault_cols), ("budgets", budgets, budget_cols),
                              ("budget under 16 threads", threads, thread_cols), ("kills", kills, kill_cols)):
        print(f"\n{title}")
        print_table(rows, cols)
    print(f"\nfuzz: {fuzz}\nleaks: {leaks}\nspeed-up: {speed}")

    survived = sum(1 for r in faults if r["survived"])
    summary = {
        "optimizers": len(faults),
        "faults injected": sum(r["faults injected"] for r in faults),
        "compiles that survived 20% faults": f"{survived}/{len(faults)}",
        "compiled under faults at least as good (faults off)": sum(
            1 for r in faults if r["score (faults)"] is not None and r["score (clean)"] is not None
            and r["score (faults)"] >= r["score (clean)"]),
        "budget compiles within max_calls": f"{sum(1 for r in budgets if r['within budget'])}/{len(budgets)}",
        "kills": len(kills),
        "calls repeated after kills (max)": max((r["calls repeated"] for r in kills), default=0),
        "finished-work calls repeated after kills": sum(r["repeated finished work"] for r in kills),
        "fuzz cases tried": fuzz["fuzz cases tried"],
        "leaks found": leaks.get("leaks found"),
        "16-thread speed-up (best of runs)": speed["speed-up"],
    }
    result = {"summary": summary, "faults": faults, "budgets": budgets, "budget_threads": threads, "kills": kills,
              "kill_seed": seed, "fuzz": fuzz, "leaks": leaks, "speedup": speed,
              "seconds": round(time.perf_counter() - started, 1)}
    write_json(out_path("reliability"), result)

    md = [
        "# Reliability",
        "",
        "Produced by `bench/reliability.py` (raw figures: `bench/out/reliability.json`). Every optimizer in the",
        "plugin registry, compiled with quick settings (`tests/reliability_cases.py`) against the loopback",
        ("OpenAI-compatible server (`honing.testing.server`). Generated "
         f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {speed['load average']} on "
         f"{speed['cpus']} CPUs."),
        "",
        "## Summary",
        "",
        *(f"- {k}: **{v}**" for k, v in summary.items()),
        "",
        "## Faults injected and survived, per optimizer",
        "",
        "20% of the calls faulty (the first 45 requests: every fifth one, cycling through all kinds; then drawn at",
        f"random, seed {FAULT_SEED}). Retries use fast backoff and a 0.5 s client timeout. *Example errors* are the",
        "unparseable replies (garbage, empty) counted as their example's error in the record. Both programs are",
        "scored on the devset with the faults off.",
        "",
        markdown(faults, fault_cols),
        "",
        "## Calls sent vs budget",
        "",
        "A compile under `Budget(max_calls=N // 2)`, N being what the same compile sends without a budget.",
        "`BudgetExceeded` is the outcome only when nothing usable existed yet (no candidate or trial scored).",
        "",
        markdown(budgets, budget_cols),
        "",
        "16 threads racing for the last calls (or tokens: each call reserves its prompt plus the request's",
        "`max_tokens` before it is sent) of a budget. `max_calls`: the server must receive exactly the limit;",
        "`max_tokens`: the tokens spent must never pass it (reservations are estimates, so fewer are spent).",
        "",
        markdown(threads, thread_cols),
        "",
        "## Calls repeated after a kill",
        "",
        "`honing compile --run-dir D` in a subprocess, SIGKILLed at a random moment after some candidates/trials",
        f"finished (seed {seed}), then `--resume`. The only call that may be sent again is the one in flight at the",
        "kill (its reply never reached the cache); *repeated finished work* must be 0.",
        "",
        markdown(kills, kill_cols),
        "",
        "## Hostile files and secrets",
        "",
        "- loader fuzz cases tried (hypothesis: random JSON, one value of a valid file replaced, truncations,",
        (f"  random bytes, deep nesting): **{fuzz['fuzz cases tried']}**, outcomes other than LoadError: "
         f"**{fuzz['non-LoadError outcomes']}**"),
        (f"- Python files walked for pickle/marshal/eval/exec: {fuzz['files walked for pickle/eval/exec']}, "
         f"check passed: {fuzz['AST check passed']}"),
        ("- sentinel API key through errors, retries, debug logs, cache, run log, saved program, inspect, export: "
         f"{leaks.get('sentinel test')}, leaks found: **{leaks.get('leaks found')}**"),
        "",
        "## Threads",
        "",
        (f"Evaluate of {speed['examples']} examples against a server with {speed['latency ms']} ms latency, "
         f"measured {len(speed['runs'])} times: best 1 thread {speed['1 thread s']} s, 16 threads "
         f"{speed['16 threads s']} s, speed-up **{speed['speed-up']}x** (median {speed['median speed-up']}x; "
         f"target >= {speed['target']}x; load average {speed['load average']} on {speed['cpus']} CPUs). "
         "Every run: " + ", ".join(f"{r['speed-up']}x at load {r['load average']}" for r in speed["runs"]) + "."),
        "",
    ]
    (BENCH / "RELIABILITY.md").write_text("\n".join(md), encoding="utf-8")
    print(f"\nwrote {BENCH / 'RELIABILITY.md'} and {out_path('reliability')} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
