"""BootstrapFinetune on Banking77 with the embedded model: a fine-tuned zero-demo program against few-shot.

    .venv/bin/python bench/finetune.py                 # the benchmark (about an hour on 2 busy cores)
    .venv/bin/python bench/finetune.py --quick         # 40 dev, 40 training examples, 10 steps: a smoke run
    .venv/bin/python bench/finetune.py --reuse-fewshot # take the few-shot program saved by an earlier run
    .venv/bin/python bench/finetune.py --teacher-cache DIR  # the teacher's LM calls from an earlier run's cache

One 10-intent subset (`bench/common.banking77_subset`, seed `--seed`); the program is `hn.Predict(Classify)`
(`intent: typing.Literal[...]`, default decoding: calibrated choice scoring on `local/smollm2-135m`).
Rows:

- `zero_shot`: the program as it is.
- `fewshot`: BootstrapFewShotWithRandomSearch (its default demo counts, 6 candidates) on the first 60
  training examples, selected on 40 val examples; or LabeledFewShot(k=16) with `--fewshot labeled`.
- `finetuned`: BootstrapFinetune with the few-shot program as teacher over `--n-train` training
  examples (traces kept where the teacher's answer is the label), LoRA on the CPU, no demos; the prompt
  is the student's (the transcript adapter, whose header lists the ten intents).
- `finetuned_compact`: the same with ``adapter="transcript_compact"``: the header does not list the
  intents (the fine-tuned model has learnt them; choice scoring still admits only them).
- `*_score`: a fine-tuned program evaluated with uncalibrated choice scoring (``decoding="score"``)
  instead of the default calibrated scoring.

Columns: dev accuracy; prompt tokens per LM call on dev (what llama.cpp reads: the prompt plus the scored
choices, as the usage reports it) and `prompt_len`, the rendered prompt alone (mean over dev, in tokens);
dev seconds per example; compile wall and CPU seconds; peak resident memory of the process so far; for
`finetuned` the training examples, steps, training seconds and first/last loss. The quality target: the
fine-tuned zero-demo program matches or beats few-shot with at least 4x fewer prompt tokens per call.
Results and settings go to bench/out/finetune.json; the few-shot program to bench/out/finetune_fewshot.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import typing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT_DIR, banking77_subset, out_path, print_table, write_json

MODEL = "local/smollm2-135m"
COLUMNS = ["method", "dev_acc", "tok/call", "prompt_len", "s/example", "demos", "compile_s", "compile_cpu_s",
           "peak_rss_mb", "train_examples", "steps", "train_s", "loss_first", "loss_last"]


def make_task(intents: list[str]) -> Any:
    import honing as hn

    literal = typing.Literal[tuple(intents)]  # type: ignore[valid-type]
    return type("Classify", (hn.Signature,), {
        "__doc__": "Classify the banking customer query into one intent.",
        "__annotations__": {"text": str, "intent": literal},
        "text": hn.InputField(),
        "intent": hn.OutputField(),
    })


def examples(rows: list[dict[str, str]]) -> list[Any]:
    import honing as hn

    return [hn.Example(text=r["text"], intent=r["intent"]).with_inputs("text") for r in rows]


def accuracy(example: Any, prediction: Any, trace: Any = None) -> bool:
    return example.intent == prediction.intent


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def prompt_len(program: Any, dev: list[Any]) -> float:
    """Mean tokens of the rendered prompt (without the scored choices) over the dev inputs."""
    import honing as hn
    from honing.plugins.lookup import resolve_adapter
    from honing.lm.local import get_engine, resolve_model_path

    engine = get_engine(resolve_model_path("smollm2-135m"))
    predictor = program.predictors()[0]
    adapter = resolve_adapter(predictor.adapter, predictor.lm or hn.LM(MODEL))
    lengths = [engine.count_tokens(adapter.render_prompt(predictor.signature, predictor.demos, ex.inputs()))
               for ex in dev]
    return round(sum(lengths) / len(lengths), 1)


def evaluate(name: str, program: Any, dev: list[Any], lm: Any, progress: bool) -> dict[str, Any]:
    import honing as hn

    started = time.perf_counter()
    with hn.context(lm=lm):
        result = hn.Evaluate(devset=dev, metric=accuracy, display_progress=progress, desc=f"dev {name}")(program)
    seconds = time.perf_counter() - started
    usage = result.usage
    return {"method": name, "dev_acc": round(result.score, 3),
            "tok/call": round(usage.prompt_tokens / usage.calls, 1) if usage.calls else None,
            "prompt_len": prompt_len(program, dev), "s/example": round(seconds / len(dev), 3),
            "demos": sum(len(p.demos) for p in program.predictors()), "dev_calls": usage.calls,
            "dev_prompt_tokens": usage.prompt_tokens, "dev_errors": result.n_errors}


def fresh_lm(root: Path, name: str) -> Any:
    import honing as hn
    from honing.lm.cache import CACHE_FILENAME, DiskCache

    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    return hn.LM(MODEL, cache=DiskCache(directory / CACHE_FILENAME))


def seed_cache(source: Path, directory: Path) -> None:
    """Start the cache in `directory` as a copy of `source` (an LM cache file or the directory holding it)."""
    import shutil

    from honing.lm.cache import CACHE_FILENAME

    source = source / CACHE_FILENAME if source.is_dir() else source
    if not source.is_file():
        raise SystemExit(f"--teacher-cache: no LM cache at {source}")
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, directory / CACHE_FILENAME)


def timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, round(time.perf_counter() - wall, 1), round(time.process_time() - cpu, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 dev, 40 training examples, 10 training steps")
    parser.add_argument("--seed", type=int, default=0, help="subset and optimizer seed (default 0)")
    parser.add_argument("--n-train", type=int, default=None, help="fine-tuning examples (default 400; --quick 40)")
    parser.add_argument("--n-dev", type=int, default=None, help="dev examples (default 200; --quick 40)")
    parser.add_argument("--fewshot", choices=("random_search", "labeled"), default="random_search")
    parser.add_argument("--num-candidates", type=int, default=6, help="random search candidates (default 6)")
    parser.add_argument("--train-kwargs", default="{}", help="JSON train_kwargs for BootstrapFinetune")
    parser.add_argument("--reuse-fewshot", action="store_true",
                        help="load the few-shot program an earlier run saved (same seed and fewshot method)")
    parser.add_argument("--variants", default="default,compact",
                        help="fine-tuned programs to make: default (the student's transcript adapter), compact "
                             "(adapter='transcript_compact', no list of intents in the prompt); comma-separated")
    parser.add_argument("--no-score-decoding", dest="score_decoding", action="store_false",
                        help="skip evaluating the fine-tuned programs with uncalibrated choice scoring too")
    parser.add_argument("--teacher-cache", default=None,
                        help="an LM cache (lm-cache.sqlite3, or its directory) whose entries the teacher's LM starts "
                             "with: an earlier run's identical teacher calls are not made again (the teacher's "
                             "calls are not measured; every evaluated program starts with an empty cache)")
    parser.add_argument("--progress", action="store_true", help="show evaluation progress bars")
    parser.add_argument("--out", default=str(out_path("finetune")), help="where to write the JSON results")
    args = parser.parse_args(argv)
    n_train = args.n_train or (40 if args.quick else 400)
    n_dev = args.n_dev or (40 if args.quick else 200)
    train_kwargs = json.loads(args.train_kwargs)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in ("default", "compact")]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose default and/or compact")
    if args.quick:
        train_kwargs.setdefault("max_steps", 10)
    n_fewshot_train = 60

    import honing as hn
    from honing_finetune import BootstrapFinetune

    subset = banking77_subset(10, seed=args.seed, n_train=max(n_train, n_fewshot_train), n_val=40, n_dev=n_dev)
    classify = make_task(subset["intents"])
    train_all, val, dev = examples(subset["train"]), examples(subset["val"]), examples(subset["dev"])
    fewshot_train, finetune_train = train_all[:n_fewshot_train], train_all[:n_train]
    settings = {"model": MODEL, "n_intents": 10, "seed": args.seed, "fewshot": args.fewshot,
                "fewshot_train": len(fewshot_train), "val": len(val), "dev": len(dev),
                "finetune_train": len(finetune_train), "train_kwargs": train_kwargs, "quick": args.quick,
                "num_candidates": args.num_candidates, "variants": args.variants, "cpus": os.cpu_count(),
                "teacher_cache": args.teacher_cache,
                "load_average": [round(x, 2) for x in os.getloadavg()]}
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)
    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {"settings": settings, "rows": rows}
    saved_fewshot = OUT_DIR / "finetune_fewshot.json"

    with tempfile.TemporaryDirectory(prefix="honing-bench-finetune-") as tmp:
        os.environ["HONING_CACHE_DIR"] = tmp  # nothing reaches a user's LM cache
        root = Path(tmp)

        student = hn.Predict(classify)
        rows.append({**evaluate("zero_shot", student, dev, fresh_lm(root, "zero_shot"), args.progress),
                     "peak_rss_mb": peak_rss_mb()})
        print(f"zero_shot: dev {rows[-1]['dev_acc']:.3f}", flush=True)

        lm = fresh_lm(root, "fewshot")
        meta_path = saved_fewshot.with_suffix(".settings.json")
        want = {"seed": args.seed, "fewshot": args.fewshot, "num_candidates": args.num_candidates,
                "intents": subset["intents"], "train": len(fewshot_train)}
        if args.reuse_fewshot and saved_fewshot.is_file() and meta_path.is_file() and \
                json.loads(meta_path.read_text()) == want:
            fewshot = hn.Predict(classify).load(saved_fewshot)
            compile_s = compile_cpu = None
            print(f"fewshot: loaded {saved_fewshot}", flush=True)
        else:
            def compile_fewshot() -> Any:
                with hn.context(lm=lm):
                    if args.fewshot == "labeled":
                        from honing_labeled import LabeledFewShot

                        return LabeledFewShot(k=16, seed=args.seed).compile(student, trainset=fewshot_train)
                    from honing_bootstrap import BootstrapFewShotWithRandomSearch

                    return BootstrapFewShotWithRandomSearch(
                        accuracy, num_candidate_programs=args.num_candidates, seed=args.seed).compile(
                        student, trainset=fewshot_train, valset=val)

            fewshot, compile_s, compile_cpu = timed(compile_fewshot)
            fewshot.save(saved_fewshot)
            meta_path.write_text(json.dumps(want) + "\n")
        rows.append({**evaluate("fewshot", fewshot, dev, lm, args.progress), "compile_s": compile_s,
                     "compile_cpu_s": compile_cpu, "peak_rss_mb": peak_rss_mb()})
        print(f"fewshot: dev {rows[-1]['dev_acc']:.3f}", flush=True)

        if args.teacher_cache:
            seed_cache(Path(args.teacher_cache), root / "finetune")
        lm = fresh_lm(root, "finetune")  # shared: the variants' teacher runs are the same calls
        for variant in args.variants:
            adapter = None if variant == "default" else "transcript_compact"
            name = "finetuned" if variant == "default" else f"finetuned_{variant}"

            def compile_finetuned(lm: Any = lm, adapter: str | None = adapter, variant: str = variant) -> Any:
                with hn.context(lm=lm):
                    return BootstrapFinetune(accuracy, train_kwargs=train_kwargs, seed=args.seed,
                                             adapter=adapter).compile(
                        student, trainset=finetune_train, teacher=fewshot, run_dir=root / f"run-{variant}")

            tuned, compile_s, compile_cpu = timed(compile_finetuned)
            (entry,) = tuned.compile_record.candidates
            run_dir = OUT_DIR / f"finetune_run_{variant}"
            run_dir.mkdir(parents=True, exist_ok=True)
            job_dir = Path(entry["data"]["chat_file"]).parent
            for file in ("loss.png", "loss.json", "train.prompt.jsonl"):
                if (job_dir / file).is_file():
                    (run_dir / file).write_bytes((job_dir / file).read_bytes())
            tuned.save(OUT_DIR / f"finetune_program_{variant}.json")
            loss = entry.get("loss") or [[0, None]]
            seconds = entry.get("seconds") or {}
            rows.append({**evaluate(name, tuned, dev, tuned.predictors()[0].lm, args.progress),
                         "compile_s": compile_s, "compile_cpu_s": compile_cpu, "peak_rss_mb": peak_rss_mb(),
                         "train_examples": entry["examples"], "steps": entry.get("steps"),
                         "train_s": seconds.get("train"), "loss_first": loss[0][1], "loss_last": loss[-1][1],
                         "model": entry["model"], "adapter": tuned.predictors()[0].adapter,
                         "hyperparameters": entry["hyperparameters"], "roundtrip": entry.get("roundtrip"),
                         "notes": list(tuned.compile_record.notes), "timing": seconds})
            print(f"{name}: dev {rows[-1]['dev_acc']:.3f}", flush=True)
            if args.score_decoding:
                raw = tuned.deepcopy()
                for predictor in raw.predictors():
                    predictor.decoding = "score"
                rows.append({**evaluate(f"{name}_score", raw, dev, raw.predictors()[0].lm, args.progress),
                             "model": entry["model"]})
                print(f"{name} (uncalibrated scoring): dev {rows[-1]['dev_acc']:.3f}", flush=True)

    by = {r["method"]: r for r in rows}
    results["summary"] = {}
    for variant in args.variants:
        name = "finetuned" if variant == "default" else f"finetuned_{variant}"
        ratio = by["fewshot"]["tok/call"] / by[name]["tok/call"]
        results["summary"][name] = {
            "fewshot_dev_acc": by["fewshot"]["dev_acc"], "dev_acc": by[name]["dev_acc"],
            "token_ratio": round(ratio, 2),
            "prompt_len_ratio": round(by["fewshot"]["prompt_len"] / by[name]["prompt_len"], 2),
            "target_met": by[name]["dev_acc"] >= by["fewshot"]["dev_acc"] and ratio >= 4,
        }
    print()
    print_table(rows, COLUMNS)
    for name, summary in results["summary"].items():
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    print(f"wrote {write_json(args.out, results)}")
    close_engines()
    return 0


def close_engines() -> None:
    """Free the llama.cpp models before interpreter shutdown (else their finalisers may fail noisily)."""
    from honing.lm import local

    for engine in list(getattr(local, "_engines", {}).values()):
        engine.close()


if __name__ == "__main__":
    sys.exit(main())
