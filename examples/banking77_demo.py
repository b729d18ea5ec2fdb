"""Compile a Banking77 intent classifier on the embedded model and compare it with zero-shot.

Runs entirely offline on the embedded SmolLM2-135M (no API key). Data: a 300-query, 10-intent sample
of Banking77 shipped in examples/banking77/ (CC-BY-4.0, PolyAI; Casanueva et al., 2020 — see
ATTRIBUTION.md there). Usage:

    .venv/bin/python examples/banking77_demo.py [--optimizer NAME] [--out compiled.json]

The default optimizer, BootstrapFewShotWithRandomSearch, searches nine candidates (zero-shot,
labelled-only, one bootstrap pass, six shuffled bootstraps), each scored on the 40 validation queries,
and keeps the best. Measured: 0.53 zero-shot, 0.72 compiled on the 100 held-out queries (395 LM calls).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import typing
from pathlib import Path

import honing as hn

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "banking77" / "sample.jsonl"
INTENTS = tuple(json.loads((HERE / "banking77" / "intents.json").read_text()))

Intent = typing.Literal[INTENTS]  # type: ignore[valid-type]


class Classify(hn.Signature):
    """Classify the banking customer query into one intent."""

    text: str = hn.InputField()
    intent: Intent = hn.OutputField()


def intent_match(example: hn.Example, prediction: hn.Prediction, trace: object = None) -> bool:
    return example.intent == prediction.intent


def splits(seed: int = 0) -> tuple[list[hn.Example], list[hn.Example], list[hn.Example]]:
    """60 train, 40 validation and 100 held-out dev queries, balanced over the 10 intents."""
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    by_intent: dict[str, list[dict]] = {}
    for row in rows:
        by_intent.setdefault(row["intent"], []).append(row)
    rng = random.Random(seed)
    train, val, dev = [], [], []
    for intent in INTENTS:
        group = by_intent[intent][:]
        rng.shuffle(group)
        train += group[:6]
        val += group[6:10]
        dev += group[10:20]
    make = lambda rs: [hn.Example(**r).with_inputs("text") for r in rs]
    return make(train), make(val), make(dev)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="BootstrapFewShotWithRandomSearch")
    parser.add_argument("--out", default="banking77_compiled.json")
    parser.add_argument("--lm", default="local/smollm2-135m")
    args = parser.parse_args(argv)

    hn.configure(lm=hn.LM(args.lm))
    train, val, dev = splits()
    evaluate = hn.Evaluate(devset=dev, metric=intent_match, display_progress=True)
    program = hn.Predict(Classify)

    started = time.perf_counter()
    zero_shot = evaluate(program)
    print(f"zero-shot accuracy on {len(dev)} held-out queries: {zero_shot.score:.3f}")

    import honing.optimizers

    optimizer_cls = getattr(honing.optimizers, args.optimizer)
    # Measured on Banking77-10 with SmolLM2-135M and calibrated choice scoring: 16 inline demos give
    # 0.56-0.68 dev accuracy, 32 give 0.78-0.80 (two seeds); more is no better.
    params = {"LabeledFewShot": {"k": 32}, "BootstrapFewShotWithRandomSearch": {"num_candidate_programs": 6}}.get(
        args.optimizer, {})
    optimizer = optimizer_cls(metric=intent_match, **params)
    compiled = optimizer.compile(program, trainset=train, valset=val)
    compiled.save(args.out)
    result = evaluate(compiled)
    record = compiled.compile_record
    print(f"{args.optimizer}: compiled in {record.wall_time:.0f}s with {record.calls} LM calls; saved {args.out}")
    print(f"compiled accuracy on the same {len(dev)} held-out queries: {result.score:.3f} "
          f"(zero-shot {zero_shot.score:.3f}); total {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
