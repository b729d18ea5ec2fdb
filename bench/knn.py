"""KNNFewShot benchmark: embedding throughput, FAISS index build/memory/latency/recall, per-call overhead,
and (with --quality) accuracy on a 10-intent Banking77 subset with the embedded local model.

    .venv/bin/python bench/knn.py            # ~9.5k real texts, 100k and 1M synthetic vectors
    .venv/bin/python bench/knn.py --quick    # 2k real texts, 20k synthetic: a smoke run
    .venv/bin/python bench/knn.py --quality  # also accuracy (slow: one local-model call per dev example)

Vectors: the real set is Banking77 texts (data/banking77/train.csv: 9,999 distinct, of which
`--queries` are held out as queries, so ~9.5k are indexed) embedded with the default model
(all-MiniLM-L6-v2, 384-d) through the default embedding cache, so only the first run embeds them.
The larger sets are synthetic: each vector is a random point between a real vector and one of its 10
nearest real neighbours, plus Gaussian noise (per-dimension std `--noise`), renormalised, so they lie on
the manifold of real embeddings (uniform random vectors have no structure and make any IVF look worse
than it is on text; plain noisy copies form clumps and make it look better). Queries are held-out real
texts (not in the index), which makes the synthetic sets' recall harder than their own leave-one-out.
Latency is one query per search call on one thread, as KNNProgram serves, p50/p99 over `--queries`
queries (200, or 50 above 10k vectors, for exact search); recall@8 is against exact search on the same
vectors. Embedding throughput is measured on a fresh cache (`--embed-sample` texts) with one torch
thread and with torch's default threads; `embed_s` is what embedding an index's texts would take.
Results: a table on stdout and bench/out/knn.json.
"""


import argparse
import gc
import os
import sys
import tempfile
import time
import typing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import banking77_rows, banking77_subset, out_path, print_table, write_json


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# ----------------------------------------------------------------------------------------------------
# embedding throughput

def bench_embedding(texts: list[str], cache_dir: str, threads: int | None) -> dict[str, Any]:
    """Cold (fresh cache) and cached sentences/s over `texts`, and one-text latency, with `threads`
    torch threads (None: torch's default)."""
    import torch
    from honing.embedders import CachedEmbedder, EmbeddingCache
    from honing.plugins.lookup import resolve_embedder

    model = resolve_embedder(None)
    started = time.perf_counter()
    model.embed(["warm up"])  # loads the model (once per process)
    load_s = time.perf_counter() - started
    default_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        embedder = CachedEmbedder(model, cache=EmbeddingCache(Path(cache_dir) / f"throughput-{threads}.sqlite3"))
        started = time.perf_counter()
        vectors = embedder.embed(texts)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        again = embedder.embed(texts)
        cached = time.perf_counter() - started
        assert (vectors == again).all()
        singles = texts[:50]
        started = time.perf_counter()
        for text in singles:
            model.embed([text])
        single = (time.perf_counter() - started) / len(singles)
    finally:
        torch.set_num_threads(default_threads)
    return {"what": "embedding", "torch_threads": threads or default_threads, "n": len(texts),
            "model_load_s": round(load_s, 2), "cold_per_s": round(len(texts) / cold, 1),
            "cached_per_s": round(len(texts) / cached, 1), "single_query_ms": round(single * 1000, 2),
            "dim": int(vectors.shape[1])}


def embed_real(texts: list[str]) -> Any:
    """The real vectors, through the default embedding cache (``$HONING_CACHE_DIR``): the first run
    embeds them (on one torch thread, the faster setting on this 2-core machine), later runs read them."""
    import torch
    from honing.embedders import CachedEmbedder
    from honing.plugins.lookup import resolve_embedder

    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return CachedEmbedder(resolve_embedder(None)).embed(texts)
    finally:
        torch.set_num_threads(default_threads)


# ----------------------------------------------------------------------------------------------------
# index build, memory, latency, recall

def synthetic(base: Any, n: int, noise: float, seed: int) -> Any:
    """`n` vectors on the manifold of the real ones: a random point between a real vector and one of its
    10 nearest real neighbours, plus Gaussian noise (std `noise` per dimension), renormalised."""
    import faiss
    import numpy as np

    rng = np.random.default_rng(seed)
    _, near = faiss.knn(base, base, 11, metric=faiss.METRIC_INNER_PRODUCT)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        a = rng.integers(0, base.shape[0], m)
        b = near[a, rng.integers(1, 11, m)]
        alpha = rng.random((m, 1), dtype=np.float32)
        block = alpha * base[a] + (1 - alpha) * base[b]
        block += noise * rng.standard_normal(block.shape, dtype=np.float32)
        out[start:start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def bench_index(name: str, x: Any, queries: Any, k: int, spec: str, seed: int,
                truth: Any | None, timed: int | None = None) -> tuple[dict[str, Any], Any]:
    """Build, then time `timed` single-query searches (default: all queries); recall over all queries."""
    import numpy as np
    from honing_knn.index import build_index, recall_at_k, search

    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    index, info = build_index(x, spec, k=k, seed=seed)
    build_s = time.perf_counter() - started
    memory = rss_mb() - before
    search(index, queries[:5], k)  # warm up
    latencies = []
    found = np.empty((len(queries), k), dtype=np.int64)
    n_timed = len(queries) if timed is None else min(timed, len(queries))
    for i in range(n_timed):
        started = time.perf_counter()
        _, ids = search(index, queries[i:i + 1], k)  # as KNNProgram serves: one query, one thread
        latencies.append((time.perf_counter() - started) * 1000)
        found[i] = ids[0]
    if n_timed < len(queries):
        found[n_timed:] = index.search(queries[n_timed:], k)[1]  # batched: only for recall
    row = {"what": "index", "set": name, "n": int(x.shape[0]), "index": info.factory,
           "nprobe": info.nprobe, "build_s": round(build_s, 2), "memory_mb": round(max(memory, 0.0), 1),
           "p50_ms": round(percentile(latencies, 50), 3), "p99_ms": round(percentile(latencies, 99), 3),
           "recall@8": round(recall_at_k(found, truth), 4) if truth is not None else 1.0,
           "tuned_recall": info.recall}
    del index
    return row, found


def index_rows(label: str, x: Any, queries: Any, k: int, seed: int, ivf: str | None) -> list[dict[str, Any]]:
    # exact search is only the baseline: time fewer of its (slow) single queries on big sets
    exact_timed = 200 if x.shape[0] <= 10_000 else 50
    exact_row, truth = bench_index(label, x, queries, k, "Flat", seed, None, timed=exact_timed)
    rows = [exact_row]
    spec = ivf or "auto"
    if spec == "auto" or spec.startswith("auto"):
        from honing_knn.index import auto_factory, auto_nlist

        spec = auto_factory(x.shape[0])
        if spec == "Flat":  # below the auto threshold: show what IVF would do at this size too
            spec = f"IVF{auto_nlist(x.shape[0])},Flat"
    ivf_row, _ = bench_index(label, x, queries, k, spec, seed, truth)
    rows.append(ivf_row)
    for row in rows:
        print_row(row)
    return rows


def print_row(row: dict[str, Any]) -> None:
    print("  " + ", ".join(f"{k}={v}" for k, v in row.items()), flush=True)


# ----------------------------------------------------------------------------------------------------
# per-call overhead and accuracy

def classify_signature(intents: list[str]) -> Any:
    import honing as hn

    intent_type = typing.Literal[tuple(intents)]  # type: ignore[valid-type]

    class Classify(hn.Signature):
        """Classify the banking customer query into one intent."""

        text: str = hn.InputField()
        intent: intent_type = hn.OutputField()  # type: ignore[valid-type]

    return Classify


def examples(rows: list[dict[str, str]]) -> list[Any]:
    import honing as hn

    return [hn.Example(text=r["text"], intent=r["intent"]).with_inputs("text") for r in rows]


def bench_overhead(seed: int, n_calls: int) -> list[dict[str, Any]]:
    """What KNN adds to a call, measured with a fake LM that costs nothing (so all of it is KNN's)."""
    import honing as hn
    from honing.testing.fake import FakeLM, nearest_demo_responder
    from honing_knn import KNNFewShot

    data = banking77_subset(n_intents=10, seed=seed, n_train=100, n_val=0, n_dev=200)
    signature = classify_signature(data["intents"])
    train, dev = examples(data["train"]), examples(data["dev"])[:n_calls]
    lm = FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)
    rows = []
    with hn.context(lm=lm):
        knn = KNNFewShot(k=8, trainset=train, seed=seed).compile(hn.Predict(signature))
        plain = hn.Predict(signature)
        plain.demos = [dict(e) for e in train[:8]]  # same prompt size, fixed demos

        def timed(fn: Any) -> list[float]:
            out = []
            for example in dev:
                started = time.perf_counter()
                fn(example)
                out.append((time.perf_counter() - started) * 1000)
            return out

        base = timed(lambda e: plain(**e.inputs()))
        cold = timed(lambda e: knn(**e.inputs()))  # query embeddings not cached yet
        warm = timed(lambda e: knn(**e.inputs()))  # every query embedding from the disk cache
        retrieve = timed(lambda e: knn.retrieve([e.inputs()]))
    for label, values in (("fixed demos (baseline)", base), ("KNN, new query", cold),
                          ("KNN, cached query", warm), ("retrieve only (cached)", retrieve)):
        rows.append({"what": "per-call", "case": label, "n": len(values),
                     "p50_ms": round(percentile(values, 50), 3), "p99_ms": round(percentile(values, 99), 3),
                     "overhead_p50_ms": (round(percentile(values, 50) - percentile(base, 50), 3)
                                         if label.startswith("KNN") else None)})
    return rows


def bench_quality(seed: int, n_dev: int, k: int, decoding: str) -> list[dict[str, Any]]:
    import collections

    import honing as hn
    from honing_knn import KNNFewShot

    data = banking77_subset(n_intents=10, seed=seed, n_train=100, n_val=0, n_dev=200)
    signature = classify_signature(data["intents"])
    train, dev = examples(data["train"]), examples(data["dev"])[:n_dev]

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        return example.intent == prediction.intent

    rows = []
    lm = hn.LM("local/smollm2-135m")
    with hn.context(lm=lm):
        knn = KNNFewShot(k=k, trainset=train, seed=seed).compile(hn.Predict(signature, decoding=decoding))
        neighbours = knn.retrieve([e.inputs() for e in dev])
        vote = sum(collections.Counter(train[n.example].intent for n in ns).most_common(1)[0][0] == e.intent
                   for ns, e in zip(neighbours, dev)) / len(dev)
        rows.append({"what": "accuracy", "program": f"neighbours' majority vote (k={k}, no LM)", "n": len(dev),
                     "accuracy": round(vote, 3)})
        for label, program in ((f"KNNFewShot k={k}", knn), ("zero-shot", hn.Predict(signature, decoding=decoding))):
            started = time.perf_counter()
            result = hn.Evaluate(devset=dev, metric=metric)(program)
            rows.append({"what": "accuracy", "program": f"{label} ({decoding})", "n": len(dev),
                         "accuracy": round(result.score, 3),
                         "s_per_call": round((time.perf_counter() - started) / len(dev), 2)})
            print_row(rows[-1])
    return rows


# ----------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", help="synthetic set sizes, comma-separated (default 100000,1000000)")
    parser.add_argument("--queries", type=int, help="held-out queries for latency and recall (default 500)")
    parser.add_argument("--embed-sample", type=int, default=1000,
                        help="texts embedded cold for the throughput figures (a quarter of them on torch's default "
                             "threads)")
    parser.add_argument("--noise", type=float, default=0.01, help="per-dimension noise of synthetic vectors")
    parser.add_argument("--quality", action="store_true", help="also measure accuracy with the local model")
    parser.add_argument("--n-dev", type=int, default=200, help="dev examples for --quality")
    parser.add_argument("--decoding", default="auto", help="Predict decoding for --quality")
    args = parser.parse_args(argv)
    import numpy as np

    n_real = 2_000 if args.quick else 10_000  # capped below so that the queries are held out
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([20_000] if args.quick
                                                                       else [100_000, 1_000_000])
    n_queries = args.queries or (200 if args.quick else 500)
    k = 8
    settings = {"quick": args.quick, "seed": args.seed, "real_texts": n_real, "synthetic_sizes": sizes,
                "queries": n_queries, "noise": args.noise, "k": k, "embedder": "sentence-transformers/all-MiniLM-L6-v2",
                "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    print("settings: " + ", ".join(f"{k_}={v}" for k_, v in settings.items()), flush=True)

    rows = banking77_rows()  # 9,999 distinct texts: the queries are held out from the indexed ones
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(rows))
    n_real = min(n_real, len(rows) - n_queries)
    settings["real_texts"] = n_real
    index_texts = [rows[i]["text"] for i in order[:n_real]]
    query_texts = [rows[i]["text"] for i in order[n_real:n_real + n_queries]]

    results: list[dict[str, Any]] = []

    def save() -> Path:  # after every stage, so an interrupted run keeps what it measured
        return write_json(out_path("knn"), {"settings": settings, "results": results})

    print("embedding throughput ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for threads, n in ((None, args.embed_sample // 4), (1, args.embed_sample)):
            results.append(bench_embedding(index_texts[:n], tmp, threads))
            print_row(results[-1])
    embed_rate = max(r["cold_per_s"] for r in results)
    real = embed_real(index_texts)
    real_queries = embed_real(query_texts)
    save()

    def with_embed_time(row: dict[str, Any]) -> dict[str, Any]:
        """What embedding that many texts would take at the best cold rate: the build's other cost."""
        return {**row, "embed_s": round(row["n"] / embed_rate, 1)}

    print(f"index on {n_real} real vectors ...", flush=True)
    results.extend(with_embed_time(r) for r in index_rows(f"real {n_real}", real, real_queries, k, args.seed, None))
    save()
    for size in sizes:
        print(f"index on {size} synthetic vectors ...", flush=True)
        x = synthetic(real, size, args.noise, args.seed)
        results.extend(with_embed_time(r) for r in index_rows(f"synthetic {size}", x, real_queries, k, args.seed,
                                                              None))
        save()
        del x
        gc.collect()

    print("per-call overhead ...", flush=True)
    previous = os.environ.get("HONING_CACHE_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HONING_CACHE_DIR"] = tmp  # "new query" must really be new
        try:
            overhead = bench_overhead(args.seed, 50 if args.quick else 200)
        finally:
            if previous is None:
                del os.environ["HONING_CACHE_DIR"]
            else:
                os.environ["HONING_CACHE_DIR"] = previous
    results.extend(overhead)
    save()
    if args.quality:
        print("accuracy with the local model ...", flush=True)
        results.extend(bench_quality(args.seed, args.n_dev, k, args.decoding))

    print()
    print_table([r for r in results if r["what"] == "embedding"],
                ["torch_threads", "n", "dim", "model_load_s", "cold_per_s", "cached_per_s", "single_query_ms"])
    print()
    print_table([r for r in results if r["what"] == "index"],
                ["set", "index", "nprobe", "build_s", "embed_s", "memory_mb", "p50_ms", "p99_ms", "recall@8"])
    print()
    print_table([r for r in results if r["what"] == "per-call"], ["case", "n", "p50_ms", "p99_ms", "overhead_p50_ms"])
    if args.quality:
        print()
        print_table([r for r in results if r["what"] == "accuracy"], ["program", "n", "accuracy", "s_per_call"])
    print(f"\nwrote {save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
