"""How closed outputs are scored on the embedded model: the prompt and calibration recipe, probed on TUNING
rows only (`common.banking77_tuning_subset`: intents no report uses).

Each variant classifies the tuning dev queries with the same labelled demos inline, by scoring every
allowed label as the continuation of the prompt, optionally minus its score after content-free inputs
(contextual calibration, Zhao et al. 2021). Variants differ in one thing at a time from honing's adapter as
shipped: the header's wording, the content-free inputs, the scored continuation (with or without the
newline that ends it) and the demo order. `honing` runs the real program (`hn.Predict` with
LabeledFewShot demos), to check that the direct variants reproduce it.

    .venv/bin/python bench/scoring.py [--seeds 0 1] [--k 60] [--n-dev 200] [--variants ...]

Prints a table and writes bench/out/scoring.json.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from common import banking77_tuning_subset, out_path, print_table, write_json  # noqa: E402

INSTRUCTIONS = "Classify the banking customer query into one intent."


def header(style: str, labels: Sequence[str]) -> str:
    options = ", ".join(labels)
    if style == "honing":  # the transcript adapter's: "<Prefix> is one of: ..."
        return f"{INSTRUCTIONS}\nIntent is one of: {options}."
    if style == "answer":  # the reference recipe's
        return f"{INSTRUCTIONS}\nAnswer with one of: {options}"
    if style == "none":
        return INSTRUCTIONS
    raise ValueError(style)


def order_demos(demos: list[dict], how: str, seed: int) -> list[dict]:
    if how == "given":
        return list(demos)
    if how == "shuffled":
        out = list(demos)
        random.Random(f"{seed}:order").shuffle(out)
        return out
    if how == "grouped":
        return sorted(demos, key=lambda d: d["intent"])
    if how == "interleaved":  # round robin over labels, each label's demos in given order
        by: dict[str, list[dict]] = {}
        for d in demos:
            by.setdefault(d["intent"], []).append(d)
        out, queues = [], [list(v) for v in by.values()]
        while any(queues):
            for q in queues:
                if q:
                    out.append(q.pop(0))
        return out
    raise ValueError(how)


def prompt(head: str, demos: Sequence[dict], text: str) -> str:
    blocks = [head] + [f"Text: {d['text']}\nIntent: {d['intent']}" for d in demos]
    blocks.append(f"Text: {text}\nIntent:")
    return "\n\n".join(blocks)


VARIANTS: dict[str, dict] = {
    # honing's adapter as shipped, replayed on the engine
    "honing_replica": dict(header="honing", cf=("N/A",), terminator="\n", order="given"),
    "reference": dict(header="answer", cf=("N/A", "", "[MASK]"), terminator=None, order="shuffled"),
    "ref_cf_na_only": dict(header="answer", cf=("N/A",), terminator=None, order="shuffled"),
    "honing_3cf": dict(header="honing", cf=("N/A", "", "[MASK]"), terminator="\n", order="given"),
    "honing_3cf_noterm": dict(header="honing", cf=("N/A", "", "[MASK]"), terminator=None, order="given"),
    "answer_3cf_given": dict(header="answer", cf=("N/A", "", "[MASK]"), terminator="\n", order="given"),
    "honing_3cf_shuffled": dict(header="honing", cf=("N/A", "", "[MASK]"), terminator="\n", order="shuffled"),
    "honing_3cf_grouped": dict(header="honing", cf=("N/A", "", "[MASK]"), terminator="\n", order="grouped"),
    "honing_3cf_interleaved": dict(header="honing", cf=("N/A", "", "[MASK]"), terminator="\n",
                                   order="interleaved"),
    "honing_uncalibrated": dict(header="honing", cf=(), terminator="\n", order="given"),
}


def run_variant(engine, spec: dict, labels: list[str], demos: list[dict], dev: list[dict], seed: int) -> dict:
    head = header(spec["header"], labels)
    ordered = order_demos(demos, spec["order"], seed)
    choices = [f" {label}" for label in labels]
    baseline = {c: 0.0 for c in choices}
    if spec["cf"]:
        per_input = [engine.score_choices(prompt(head, ordered, cf), choices, terminator=spec["terminator"])
                     ["logprobs"] for cf in spec["cf"]]
        baseline = {c: sum(p[c] for p in per_input) / len(per_input) for c in choices}
    correct = 0
    started = time.perf_counter()
    for row in dev:
        scores = engine.score_choices(prompt(head, ordered, row["text"]), choices,
                                      terminator=spec["terminator"])["logprobs"]
        best = max(choices, key=lambda c: scores[c] - baseline[c])
        correct += best.strip() == row["intent"]
    return {"acc": correct / len(dev), "seconds": round(time.perf_counter() - started, 1)}


def reference_recipe(engine: Any, labels: list[str], demos: list[dict], dev: list[dict], seed: int) -> float:
    """Accuracy of the reference recipe: labels listed in the header ("Answer with one of"), the demos
    inline in a seeded shuffle, each label scored as ``" " + label`` after ``Intent:``, minus its mean
    score after three content-free inputs ("N/A", "", "[MASK]")."""
    return run_variant(engine, VARIANTS["reference"], labels, demos, dev, seed)["acc"]


def run_honing(labels: list[str], demos: list[dict], dev: list[dict], seed: int) -> dict:
    """The real thing: Predict + LabeledFewShot-style demos (given order) + Evaluate."""
    import honing as hn

    intent = typing.Literal[tuple(labels)]  # type: ignore[valid-type]
    classify = type("Classify", (hn.Signature,), {"__doc__": INSTRUCTIONS,
                                                  "__annotations__": {"text": str, "intent": intent},
                                                  "text": hn.InputField(), "intent": hn.OutputField()})
    program = hn.Predict(classify)
    program.demos = [{"text": d["text"], "intent": d["intent"]} for d in demos]
    devset = [hn.Example(**r).with_inputs("text") for r in dev]
    started = time.perf_counter()
    metric: Callable = lambda e, p, t=None: e.intent == p.intent  # noqa: E731
    with hn.context(lm=hn.LM("local/smollm2-135m", cache=False)):
        result = hn.Evaluate(devset=devset, metric=metric)(program)
    return {"acc": result.score, "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--k", type=int, default=60, help="labelled demos inline (sampled from train+val)")
    parser.add_argument("--n-dev", type=int, default=200)
    parser.add_argument("--variants", nargs="+", default=["honing", *VARIANTS])
    parser.add_argument("--name", default="scoring")
    args = parser.parse_args(argv)

    from honing.lm.local import get_engine, resolve_model_path

    engine = get_engine(resolve_model_path("local/smollm2-135m"))
    rows = []
    for seed in args.seeds:
        split = banking77_tuning_subset(seed=seed, n_dev=args.n_dev)
        labels = split["intents"]
        pool = split["train"] + split["val"]
        demos = random.Random(f"{seed}:demos").sample(pool, min(args.k, len(pool)))
        for name in args.variants:
            if name == "honing":
                result = run_honing(labels, demos, split["dev"], seed)
            else:
                result = run_variant(engine, VARIANTS[name], labels, demos, split["dev"], seed)
            rows.append({"seed": seed, "variant": name, "k": len(demos), **result})
            print(rows[-1], flush=True)
    print()
    print_table(rows, ["seed", "variant", "k", "acc", "seconds"])
    write_json(out_path(args.name), {"settings": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
