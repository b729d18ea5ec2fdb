"""Does the default search beat not searching? BootstrapFewShotWithRandomSearch against the programs that
need no search, on the embedded model, on the bench's Banking77-10 dev splits and the README demo's rows.

Rows per data set: zero-shot; LabeledFewShot at its default (k=16); LabeledFewShot with every demo that
fits the context (k=None); the reference recipe of contextual calibration (`scoring.reference_recipe`,
the same train demos, run on the engine directly); RandomSearch at its defaults; KNNFewShot(k=8). Each
row gives held-out accuracy, the compile's LM calls and seconds, and the evaluation's seconds.

    .venv/bin/python bench/default_search.py                       # subsets 0 1 2 (200 dev) and the demo
    .venv/bin/python bench/default_search.py --sets demo --methods random_search

Prints a table and writes bench/out/default_search.json. Every LM gets a fresh cache per row, so calls
and seconds are what a first run pays.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import typing
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import REPO_ROOT, banking77_subset, out_path, print_table, write_json  # noqa: E402
from scoring import INSTRUCTIONS, reference_recipe  # noqa: E402

MODEL = "local/smollm2-135m"
METHODS = ("zero_shot", "labeled_16", "labeled_all", "reference", "random_search", "knn")


def data_sets(names: list[str], n_dev: int) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name in names:
        if name == "demo":
            spec = importlib.util.spec_from_file_location("banking77_demo", REPO_ROOT / "examples" / "banking77_demo.py")
            demo = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(demo)
            train, val, dev = demo.splits()
            rows = lambda examples: [{"text": e.text, "intent": e.intent} for e in examples]  # noqa: E731
            out.append(("demo", {"intents": list(demo.INTENTS), "train": rows(train), "val": rows(val),
                                 "dev": rows(dev)}))
        else:
            out.append((f"subset{name}", banking77_subset(seed=int(name), n_dev=n_dev)))
    return out


def accuracy(example: Any, prediction: Any, trace: Any = None) -> bool:
    return example.intent == prediction.intent


def run(method: str, split: dict[str, Any], seed: int, cache_root: Path) -> dict[str, Any]:
    import honing as hn
    from honing.lm.cache import DiskCache
    from honing.lm.usage import track_usage

    labels = tuple(split["intents"])
    classify = type("Classify", (hn.Signature,), {
        "__doc__": INSTRUCTIONS, "__annotations__": {"text": str, "intent": typing.Literal[labels]},
        "text": hn.InputField(), "intent": hn.OutputField()})
    make = lambda rows: [hn.Example(**r).with_inputs("text") for r in rows]  # noqa: E731
    train, val, dev = make(split["train"]), make(split["val"]), make(split["dev"])
    if method == "reference":
        from honing.lm.local import get_engine, resolve_model_path

        engine = get_engine(resolve_model_path(MODEL))
        started = time.perf_counter()
        acc = reference_recipe(engine, list(labels), split["train"], split["dev"], seed)
        return {"dev_acc": round(acc, 3), "compile_calls": 0, "compile_s": 0.0,
                "eval_s": round(time.perf_counter() - started, 1)}
    (cache_root / method).mkdir(parents=True, exist_ok=True)
    lm = hn.LM(MODEL, cache=DiskCache(cache_root / method / "cache.sqlite3"))
    student = hn.Predict(classify)
    started = time.perf_counter()
    with hn.context(lm=lm), track_usage() as spent:
        if method == "zero_shot":
            program = student
        elif method == "labeled_16":
            from honing_labeled import LabeledFewShot

            program = LabeledFewShot(k=16, seed=seed).compile(student, trainset=train)
        elif method == "labeled_all":
            from honing_labeled import LabeledFewShot

            program = LabeledFewShot(k=None, seed=seed).compile(student, trainset=train)
        elif method == "random_search":
            from honing_bootstrap import BootstrapFewShotWithRandomSearch

            program = BootstrapFewShotWithRandomSearch(accuracy, num_candidate_programs=6, seed=seed,
                                                       display_progress=False).compile(
                student, trainset=train, valset=val)
        elif method == "knn":
            from honing_knn import KNNFewShot

            program = KNNFewShot(k=8, trainset=train, seed=seed).compile(student, trainset=train)
        else:
            raise SystemExit(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    with hn.context(lm=lm):
        result = hn.Evaluate(devset=dev, metric=accuracy)(program)
    record = program.compile_record
    n_demos = len(program.predictors()[0].demos)
    # which candidate a search kept: the one with the kept score and the kept number of demos
    chosen = next((c["key"] for c in (record.candidates if record else ())
                   if record.score is not None and round(c["score"], 6) == round(record.score, 6)
                   and c.get("demos", {}).get("self") == n_demos), None)
    return {"dev_acc": round(result.score, 3), "compile_calls": spent.total.calls,
            "compile_s": round(compile_s, 1), "eval_s": round(time.perf_counter() - started, 1),
            "demos": n_demos if method != "knn" else 8, "chosen": chosen}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["0", "1", "2", "demo"],
                        help="bench subsets by seed, and/or 'demo' (the README demo's 60/40/100 rows)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--n-dev", type=int, default=200)
    parser.add_argument("--name", default="default_search")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="honing-bench-") as tmp:
        for name, split in data_sets(args.sets, args.n_dev):
            seed = 0 if name == "demo" else int(name.removeprefix("subset"))
            for method in args.methods:
                row = {"set": name, "method": method, "n_dev": len(split["dev"]),
                       **run(method, split, seed, Path(tmp) / name)}
                rows.append(row)
                print(row, flush=True)
    print()
    print_table(rows, ["set", "method", "n_dev", "dev_acc", "demos", "chosen", "compile_calls", "compile_s",
                       "eval_s"])
    write_json(out_path(args.name), {"settings": vars(args), "model": MODEL, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
