"""Few-shot optimizers on Banking77 with the embedded model: accuracy, compile time and what it spent.

    .venv/bin/python bench/fewshot.py              # one 10-intent subset (seed 0), 200 dev examples
    .venv/bin/python bench/fewshot.py --quick      # 60 dev examples, 2 search candidates: a fast check
    .venv/bin/python bench/fewshot.py --seeds 0 1  # several subsets (other train/val/dev draws)
    .venv/bin/python bench/fewshot.py --methods random_search,ensemble --run-dir bench/out/runs
                                                   # some methods; keep the searches' event logs

For each subset (`bench/common.banking77_subset`: 60 train, 40 val, n dev; text -> intent as a
`typing.Literal`), the program `hn.Predict(Classify)` with default decoding ("auto": calibrated choice
scoring on the local model) is compiled by: nothing (zero-shot), LabeledFewShot(k=16),
BootstrapFewShot, BootstrapFewShotWithRandomSearch, BootstrapFewShotWithOptuna (defaults, with
`--num-candidates` candidates), and an Ensemble of random search's top 3 candidates (given the metric
and the valset, so it keeps the combination of members that votes best there). Each method gets
its own fresh LM disk cache (so no method is served another's calls; calls repeated within one method
are, as in real use), except the Ensemble, which shares random search's (its members are its
candidates); each is then scored on the dev split, and the three candidates offered to the Ensemble alone
too (`members_dev_acc` and `members_kept` in the JSON).

Columns: dev accuracy; `val` (the optimizer's selection score); compile wall time and this process's
CPU time (on a shared machine wall time mostly measures the neighbours), LM calls and prompt tokens; `kv_reused` (share of compile prompt tokens the local model took from its KV prefix cache);
`cache_hit` (share of compile requests served by the LM disk cache); dev-evaluation time; demos used.
Results (with the settings) go to bench/out/fewshot.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import typing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import banking77_subset, out_path, print_table, write_json

MODEL = "local/smollm2-135m"
METHODS = ("zero_shot", "labeled", "bootstrap", "random_search", "optuna", "ensemble")
COLUMNS = ["method", "dev_acc", "val", "compile_s", "compile_cpu_s", "calls", "prompt_tokens", "kv_reused",
           "cache_hit", "eval_s", "demos"]


def make_task(subset: dict[str, Any]) -> tuple[Any, list[Any], list[Any], list[Any]]:
    import honing as hn

    # the intents are known only at run time, so the class is made with type() (string annotations
    # under `from __future__ import annotations` could not name them)
    intents = typing.Literal[tuple(subset["intents"])]  # type: ignore[valid-type]
    classify = type("Classify", (hn.Signature,), {
        "__doc__": "Classify the banking customer query into one intent.",
        "__annotations__": {"text": str, "intent": intents},
        "text": hn.InputField(),
        "intent": hn.OutputField(),
    })

    def examples(rows: list[dict[str, str]]) -> list[Any]:
        return [hn.Example(text=r["text"], intent=r["intent"]).with_inputs("text") for r in rows]

    return classify, examples(subset["train"]), examples(subset["val"]), examples(subset["dev"])


def accuracy(example: Any, prediction: Any, trace: Any = None) -> bool:
    return example.intent == prediction.intent


def fresh_lm(cache_root: Path, name: str) -> Any:
    import honing as hn
    from honing.lm.cache import CACHE_FILENAME, DiskCache

    directory = cache_root / name
    directory.mkdir(parents=True, exist_ok=True)
    return hn.LM(MODEL, cache=DiskCache(directory / CACHE_FILENAME))


def run_dir(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """``run_dir=`` for a search when --run-dir is given: one fresh directory per method and subset."""
    if not args.run_dir:
        return {}
    return {"run_dir": Path(args.run_dir) / f"s{args.current_subset}-{method}-{time.strftime('%Y%m%d-%H%M%S')}"}


def share(part: float, whole: float) -> float | None:
    return round(part / whole, 3) if whole else None


def run_method(method: str, classify: Any, train: list[Any], val: list[Any], dev: list[Any], args: argparse.Namespace,
               cache_root: Path, searched: dict[str, Any]) -> dict[str, Any]:
    import honing as hn
    from honing.lm.usage import track_usage
    from honing_bootstrap import (
        BootstrapFewShot,
        BootstrapFewShotWithOptuna,
        BootstrapFewShotWithRandomSearch,
    )
    from honing_ensemble import Ensemble
    from honing_labeled import LabeledFewShot

    # the ensemble is built from random search's candidates and shares its LM cache: its members' calls
    # are the candidates' calls (and scoring the members one by one afterwards is then free)
    lm = searched["lm"] if method == "ensemble" and "lm" in searched else fresh_lm(cache_root, method)
    student = hn.Predict(classify)
    started, cpu_started = time.perf_counter(), time.process_time()
    with hn.context(lm=lm), track_usage() as spent:
        if method == "zero_shot":
            program = student
        elif method == "labeled":
            program = LabeledFewShot(k=16, seed=args.seed).compile(student, trainset=train)
        elif method == "bootstrap":
            program = BootstrapFewShot(accuracy, seed=args.seed).compile(student, trainset=train)
        elif method == "random_search":
            optimizer = BootstrapFewShotWithRandomSearch(accuracy, num_candidate_programs=args.num_candidates,
                                                         seed=args.seed, display_progress=args.progress)
            run = optimizer.compile_run(student, trainset=train, valset=val, **run_dir(args, "random_search"))
            program = run.program
            searched["random_search"], searched["lm"] = run, lm
        elif method == "optuna":
            program = BootstrapFewShotWithOptuna(accuracy, num_candidate_programs=args.num_candidates,
                                                 seed=args.seed, display_progress=args.progress).compile(
                student, trainset=train, valset=val, **run_dir(args, "optuna"))
        elif method == "ensemble":
            search = searched.get("random_search")
            if search is None:
                raise SystemExit("the ensemble method needs random_search to run first (in the same invocation)")
            program = Ensemble(metric=accuracy, seed=args.seed).compile(search.top_programs(3), valset=val)
        else:
            raise SystemExit(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    compile_s, compile_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    usage = spent.total
    started = time.perf_counter()
    with hn.context(lm=lm):
        result = hn.Evaluate(devset=dev, metric=accuracy, display_progress=args.progress, desc=f"dev {method}")(program)
    record = program.compile_record
    requests = usage.calls + usage.cache_hits
    members = None
    if method == "ensemble":  # each candidate offered to it alone on dev (the cache serves those it kept)
        with hn.context(lm=lm):
            members = [round(hn.Evaluate(devset=dev, metric=accuracy)(m).score, 3)
                       for m in searched["random_search"].top_programs(3)]
    return {
        "method": method,
        "dev_acc": round(result.score, 3),
        "val": round(record.score, 3) if record is not None and record.score is not None else None,
        "compile_s": round(compile_s, 1),
        "compile_cpu_s": round(compile_cpu_s, 1),
        "calls": usage.calls,
        "prompt_tokens": usage.prompt_tokens,
        "kv_reused": share(usage.reused_prompt_tokens, usage.prompt_tokens),
        "cache_hit": share(usage.cache_hits, requests),
        "eval_s": round(time.perf_counter() - started, 1),
        "eval_calls": result.usage.calls,
        "demos": sum(len(p.demos) for p in program.predictors()),
        "dev_errors": result.n_errors,
        "members_dev_acc": members,
        "members_kept": len(program.members) if method == "ensemble" else None,
        "notes": list(record.notes) if record is not None else [],
        "candidates": [{k: c.get(k) for k in ("key", "score", "demos", "calls")} for c in record.candidates]
        if record is not None else [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 dev examples and 2 search candidates")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="subset seeds (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="the optimizers' seed")
    parser.add_argument("--n-dev", type=int, default=None, help="dev examples (default 200; --quick 60)")
    parser.add_argument("--n-train", type=int, default=60, help="training examples (default 60)")
    parser.add_argument("--n-val", type=int, default=40, help="validation examples (default 40)")
    parser.add_argument("--num-candidates", type=int, default=None,
                        help="num_candidate_programs for the searches (default 6; --quick 2)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--run-dir", default=None,
                        help="keep the searches' run logs (every candidate/trial as it finishes) under this directory")
    parser.add_argument("--out", default=str(out_path("fewshot")), help="where to write the JSON results")
    args = parser.parse_args(argv)
    args.n_dev = args.n_dev or (60 if args.quick else 200)
    args.num_candidates = args.num_candidates if args.num_candidates is not None else (2 if args.quick else 6)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    settings = {"model": MODEL, "n_intents": 10, "n_train": args.n_train, "n_val": args.n_val, "n_dev": args.n_dev,
                "subset_seeds": args.seeds, "optimizer_seed": args.seed, "num_candidate_programs": args.num_candidates,
                "methods": methods, "quick": args.quick}
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)
    results: dict[str, Any] = {"settings": settings, "subsets": []}
    with tempfile.TemporaryDirectory(prefix="honing-bench-cache-") as tmp:
        os.environ["HONING_CACHE_DIR"] = tmp  # nothing reaches a user's cache
        for subset_seed in args.seeds:
            args.current_subset = subset_seed
            subset = banking77_subset(10, seed=subset_seed, n_train=args.n_train, n_val=args.n_val, n_dev=args.n_dev)
            classify, train, val, dev = make_task(subset)
            print(f"\nsubset seed {subset_seed}: intents {', '.join(subset['intents'])}", flush=True)
            rows: list[dict[str, Any]] = []
            results["subsets"].append({"seed": subset_seed, "intents": subset["intents"], "rows": rows})
            searched: dict[str, Any] = {}
            for method in methods:
                row = run_method(method, classify, train, val, dev, args, Path(tmp) / f"s{subset_seed}", searched)
                rows.append(row)
                write_json(args.out, results)  # after every method: a long run cut short keeps what finished
                print(f"  {method}: dev {row['dev_acc']:.3f} ({row['compile_s']}s compile, "
                      f"{row['compile_cpu_s']}s CPU, {row['calls']} calls)", flush=True)
            print()
            print_table(rows, COLUMNS)
    if len(args.seeds) > 1:
        mean_rows = []
        for method in methods:
            scores = [r["dev_acc"] for s in results["subsets"] for r in s["rows"] if r["method"] == method]
            mean_rows.append({"method": method, "mean_dev_acc": round(statistics.mean(scores), 3),
                              "min_dev_acc": min(scores), "max_dev_acc": max(scores)})
        print("\nover subsets:")
        print_table(mean_rows, ["method", "mean_dev_acc", "min_dev_acc", "max_dev_acc"])
        results["summary"] = mean_rows
    print(f"\nwrote {write_json(args.out, results)}")
    close_engine()
    return 0


def close_engine() -> None:
    """Free the llama.cpp model before interpreter shutdown (else its finaliser may fail noisily)."""
    from honing.lm import local

    local.get_engine(local.resolve_model_path(MODEL.split("/", 1)[1])).close()


if __name__ == "__main__":
    sys.exit(main())
