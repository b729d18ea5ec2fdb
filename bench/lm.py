"""Per-call overhead of honing's LM layer, and the embedded model's speed.

Measures, on this machine:
  1. honing `LM` vs raw `litellm.completion` against an instant loopback OpenAI-compatible server
     (uncached and cached calls): what the framework adds per call.
  2. the embedded SmolLM2-135M through honing (`LM("local/...")`, uncached and cached) vs raw
     llama-cpp-python on the same prompt, and vs honing's own engine called directly.
  3. the embedded model's prompt-processing and generation tokens per second.

Model and network time vary from call to call far more than the layer's overhead, so the overheads
that matter are *paired*: "paired overhead" rows alternate a bare call and the same kind of call through
`LM`, call by call, and report the median of the per-pair differences (the drift of a busy machine
hits both halves of a pair alike). The "overhead_ms" of the unpaired rows is a difference of medians.

Prints a table and writes bench/out/lm.json. Usage: .venv/bin/python bench/lm.py [--quick] [--calls N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from common import out_path, print_table, write_json  # noqa: E402


def per_call(fn, n: int) -> dict:
    times = []
    for i in range(n):
        started = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - started)
    times.sort()
    return {"n": n, "median_ms": statistics.median(times) * 1e3, "p90_ms": times[int(0.9 * (n - 1))] * 1e3}


def paired(bare, through_lm, n: int) -> dict:
    """Median of (through_lm(i) - bare(i)) over `n` pairs, the order inside a pair alternating."""
    diffs = []
    for i in range(n):
        order = (bare, through_lm) if i % 2 == 0 else (through_lm, bare)
        took = []
        for fn in order:
            started = time.perf_counter()
            fn(i)
            took.append(time.perf_counter() - started)
        bare_s, lm_s = took if i % 2 == 0 else took[::-1]
        diffs.append(lm_s - bare_s)
    diffs.sort()
    return {"n": n, "overhead_ms": statistics.median(diffs) * 1e3,
            "p90_ms": diffs[int(0.9 * (n - 1))] * 1e3}


def bench_http(n: int) -> list[dict]:
    import litellm

    import honing as hn
    from honing.lm.types import LMRequest
    from honing.testing.server import OpenAICompatServer

    rows = []
    with OpenAICompatServer(responder=lambda r: "ok") as server:
        messages = lambda i: [{"role": "user", "content": f"question {i}"}]  # noqa: E731
        litellm.completion(model="openai/test-model", api_base=server.url, api_key="sk-bench",
                           messages=messages(-1))
        raw = per_call(lambda i: litellm.completion(model="openai/test-model", api_base=server.url,
                                                    api_key="sk-bench", messages=messages(i)), n)
        rows.append({"path": "raw litellm.completion (loopback server)", **raw})
        lm = hn.LM("openai/test-model", api_base=server.url, api_key="sk-bench", cache=True)
        lm(LMRequest(messages=messages(-1)))
        uncached = per_call(lambda i: lm(LMRequest(messages=messages(i))), n)
        rows.append({"path": "honing LM, uncached (loopback server)", **uncached,
                     "overhead_ms": uncached["median_ms"] - raw["median_ms"]})
        cached = per_call(lambda i: lm(LMRequest(messages=messages(i))), n)
        rows.append({"path": "honing LM, cached (disk cache hit)", **cached})
        # the bare call sends what LM sends (no retries, the LM's timeout), so both reuse one litellm
        # client and connection: alternating two connections to the loopback server makes every other
        # call skip a ~40 ms TCP delayed-ACK wait, which would swamp the difference
        fresh = lambda i: [{"role": "user", "content": f"paired question {i}"}]  # noqa: E731
        pair = paired(lambda i: litellm.completion(model="openai/test-model", api_base=server.url,
                                                   api_key="sk-bench", messages=fresh(2 * i),
                                                   timeout=lm.timeout, num_retries=0, max_retries=0),
                      lambda i: lm(LMRequest(messages=fresh(2 * i + 1))), n)
        rows.append({"path": "paired overhead: LM uncached - raw litellm", **pair})
    return rows


def bench_local(n: int) -> tuple[list[dict], dict]:
    import honing as hn
    from honing.lm.local import get_engine, resolve_model_path
    from honing.lm.types import LMRequest

    path = resolve_model_path("smollm2-135m")
    engine = get_engine(path)
    base = "Answer with one word.\n\nQuestion: What colour is the sky?\nAnswer: blue\n\n"
    prompts = [f"{base}Question: What is item number {i}?\nAnswer:" for i in range(n + 1)]
    rows = []
    engine.complete(prompts[0], max_tokens=4, stop=("\n",))
    llama = engine._llama if hasattr(engine, "_llama") else None
    if llama is not None:
        raw = per_call(lambda i: llama.create_completion(prompts[i + 1], max_tokens=4, stop=["\n"],
                                                         temperature=0.0), n)
        rows.append({"path": "raw llama-cpp create_completion (4 tokens)", **raw})
        engine.reset()  # the raw calls moved llama.cpp's KV cache behind the engine's back
    lm = hn.LM("local/smollm2-135m", max_tokens=4)
    lm(LMRequest(prompt=prompts[0], stop=("\n",)))
    uncached = per_call(lambda i: lm(LMRequest(prompt=prompts[i + 1], stop=("\n",))), n)
    rows.append({"path": "honing LM local, uncached (4 tokens)", **uncached,
                 **({"overhead_ms": uncached["median_ms"] - rows[0]["median_ms"]}
                    if llama is not None else {})})
    cached = per_call(lambda i: lm(LMRequest(prompt=prompts[i + 1], stop=("\n",))), n)
    rows.append({"path": "honing LM local, cached", **cached})
    # the same engine called directly vs through LM, alternating: the same work (a prompt of the same
    # length sharing the same prefix with the call before, 4 tokens generated), so the difference is
    # what the LM layer adds (cache lookup and write, accounting, the request's way to the engine)
    paired_prompt = lambda i: f"{base}Question: What is item number {1000 + i}?\nAnswer:"  # noqa: E731
    pair = paired(lambda i: engine.complete(paired_prompt(2 * i), max_tokens=4, stop=()),
                  lambda i: lm(LMRequest(prompt=paired_prompt(2 * i + 1))), 2 * n)
    rows.append({"path": "paired overhead: LM local uncached - engine", **pair})

    # throughput: a long fresh prompt (no prefix reuse), then free generation
    engine.reset()
    long_prompt = " ".join(f"word{i}" for i in range(300))
    started = time.perf_counter()
    out = engine.complete(long_prompt, max_tokens=1)
    prompt_s = time.perf_counter() - started
    engine.reset()
    started = time.perf_counter()
    gen = engine.complete("Write a long story about a dragon.\n", max_tokens=128, stop=())
    gen_s = time.perf_counter() - started
    speed = {"prompt_tokens": out["prompt_tokens"], "prompt_tok_per_s": out["prompt_tokens"] / prompt_s,
             "generated_tokens": gen["completion_tokens"],
             "generation_tok_per_s": gen["completion_tokens"] / max(gen_s, 1e-9)}
    return rows, speed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls")
    parser.add_argument("--calls", type=int, default=None,
                        help="HTTP calls per row (default 100, 20 with --quick); local rows make a fifth")
    args = parser.parse_args()
    n = args.calls or (20 if args.quick else 100)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["HONING_CACHE_DIR"] = cache
        rows = bench_http(n)
        local_rows, speed = bench_local(max(5, n // 5))
    rows += local_rows
    for r in rows:
        for k in ("median_ms", "p90_ms", "overhead_ms"):
            if k in r:
                r[k] = round(r[k], 3)
    print_table(rows, ["path", "n", "median_ms", "p90_ms", "overhead_ms"])
    print(f"\nembedded model: {speed['prompt_tok_per_s']:.0f} prompt tok/s "
          f"({speed['prompt_tokens']} tokens), "
          f"{speed['generation_tok_per_s']:.1f} generated tok/s ({speed['generated_tokens']} tokens); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    write_json(out_path("lm"), {"calls": rows, "embedded": speed, "loadavg": os.getloadavg(),
                                "cpus": os.cpu_count()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
