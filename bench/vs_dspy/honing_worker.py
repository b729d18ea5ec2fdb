"""One measurement of honing, run in its own process under honing's venv (``.venv``).

    .venv/bin/python bench/vs_dspy/honing_worker.py JOB.json OUT.json

The driver (`run.py`) writes the job: its kind (quality / overhead / throughput / embed), the data
rows and the settings; this process does that one thing and writes timings, scores, LM usage and its
own peak RSS. Nothing here decides what is compared with what; `run.py` does.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import typing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from jobio import INSTRUCTION, Stopwatch, env_summary, profiled, read_job, scripted_answer, write_result  # noqa: E402

MODEL = "local/smollm2-135m"


def make_task(intents: list[str]) -> Any:
    import honing as hn

    literal = typing.Literal[tuple(intents)]  # type: ignore[valid-type]
    return type("Classify", (hn.Signature,), {
        "__doc__": INSTRUCTION,
        "__annotations__": {"text": str, "intent": literal},
        "text": hn.InputField(),
        "intent": hn.OutputField(),
    })


def examples(rows: list[dict[str, str]]) -> list[Any]:
    import honing as hn

    return [hn.Example(text=r["text"], intent=r["intent"]).with_inputs("text") for r in rows]


def accuracy(example: Any, prediction: Any, trace: Any = None) -> bool:
    return example.intent == prediction.intent


def usage_dict(u: Any) -> dict[str, Any]:
    return {"calls": u.calls, "cache_hits": u.cache_hits, "prompt_tokens": u.prompt_tokens,
            "reused_prompt_tokens": u.reused_prompt_tokens, "completion_tokens": u.completion_tokens}


def make_optimizer(method: str, job: dict[str, Any], train: list[Any]) -> Any:
    p = job["params"]
    if method == "labeled":
        from honing_labeled import LabeledFewShot

        return LabeledFewShot(k=p["labeled_k"], seed=p["optimizer_seed"])
    if method == "random_search":
        from honing_bootstrap import BootstrapFewShotWithRandomSearch

        kw = {k: p[k] for k in ("max_labeled_demos", "max_bootstrapped_demos") if p.get(k) is not None}
        return BootstrapFewShotWithRandomSearch(accuracy, num_candidate_programs=p["num_candidates"],
                                                seed=p["optimizer_seed"], display_progress=False,
                                                num_threads=p.get("num_threads"), **kw)
    if method == "knn":
        from honing_knn import KNNFewShot

        return KNNFewShot(k=p["knn_k"], trainset=train, seed=p["optimizer_seed"])
    if method == "mipro_light":
        from honing_bayesian import BayesianSignatureOptimizer

        return BayesianSignatureOptimizer(accuracy, auto="light", seed=p["optimizer_seed"])
    raise SystemExit(f"unknown method {method!r}")


def quality(job: dict[str, Any]) -> dict[str, Any]:
    """Compile one method on the embedded model, then score it on dev."""
    import honing as hn
    from honing.lm.usage import track_usage

    classify = make_task(job["intents"])
    train, val, dev = examples(job["train"]), examples(job["val"]), examples(job["dev"])
    lm = hn.LM(MODEL)
    method = job["method"]
    student = hn.Predict(classify)
    out: dict[str, Any] = {"method": method}
    with hn.context(lm=lm):
        with track_usage() as spent, Stopwatch() as compile_time:
            if method == "zero_shot":
                program = student
            else:
                program = make_optimizer(method, job, train).compile(student, trainset=train, valset=val)
        rss_after_compile = _rss_now()
        with Stopwatch() as eval_time:
            result = hn.Evaluate(devset=dev, metric=accuracy, num_threads=job["params"].get("num_threads"))(program)
    record = getattr(program, "compile_record", None)
    out.update({
        "dev_acc": round(result.score, 4),
        "val_score": round(record.score, 4) if record is not None and record.score is not None else None,
        "compile_wall_s": round(compile_time.wall, 3), "compile_cpu_s": round(compile_time.cpu, 3),
        "eval_wall_s": round(eval_time.wall, 3), "eval_cpu_s": round(eval_time.cpu, 3),
        "compile_usage": usage_dict(spent.total), "eval_usage": usage_dict(result.usage),
        "dev_errors": result.n_errors,
        "demos": sum(len(p.demos) for p in program.predictors()) if hasattr(program, "predictors") else None,
        "rss_after_compile_mb": rss_after_compile,
    })
    close_engine()
    return out


def _rss_now() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


# ------------------------------------------------------------------------------------------------
# Compile overhead with an instant scripted LM


_QUERY = re.compile(r"^Text: ?(.*)$", re.MULTILINE)


def scripted_lm(job: dict[str, Any]) -> Any:
    """honing's own test fake (`honing.testing.fake.FakeLM`) answering `jobio.scripted_answer`.

    It finds the query in the prompt (the last ``Text:`` line of the transcript), looks its answer up
    and replies in microseconds. The DSPy worker's fake does the same on DSPy's prompt format.
    """
    from honing.testing.fake import FakeLM

    answers = {r["text"]: scripted_answer(r["text"], r["intent"], job["intents"])
               for split in ("train", "val", "dev") for r in job[split]}

    def respond(request: Any) -> str:
        found = _QUERY.findall(request.text())
        return answers.get(found[-1].strip(), job["intents"][0]) if found else job["intents"][0]

    return FakeLM(responder=respond)


def overhead(job: dict[str, Any]) -> dict[str, Any]:
    import honing as hn

    p = job["params"]
    with Stopwatch() as imports:
        classify = make_task(job["intents"])
        from honing_bootstrap import BootstrapFewShotWithRandomSearch
    train, val, dev = examples(job["train"]), examples(job["val"]), examples(job["dev"])
    lm = scripted_lm(job)
    out: dict[str, Any] = {"op": job["op"], "import_s": round(imports.wall, 3)}
    with hn.context(lm=lm, num_threads=p["num_threads"]):
        if job["op"] == "compile":
            optimizer = BootstrapFewShotWithRandomSearch(
                accuracy, num_candidate_programs=p["num_candidates"], max_bootstrapped_demos=p["max_bootstrapped_demos"],
                max_labeled_demos=p["max_labeled_demos"], seed=p["optimizer_seed"], display_progress=False,
                num_threads=p["num_threads"])
            with Stopwatch() as t:
                program, prof = profiled(job.get("profile", False),
                                         lambda: optimizer.compile(hn.Predict(classify), trainset=train, valset=val))
            out["val_score"] = program.compile_record.score
            out["demos"] = sum(len(q.demos) for q in program.predictors())
        else:
            program = hn.Predict(classify)
            evaluate = hn.Evaluate(devset=dev, metric=accuracy, num_threads=p["num_threads"])
            with Stopwatch() as t:
                result, prof = profiled(job.get("profile", False), lambda: evaluate(program))
            out["score"] = result.score
    out.update({"wall_s": round(t.wall, 4), "cpu_s": round(t.cpu, 4), "lm_calls": len(lm.requests), "profile": prof,
                "prompt_chars": sum(len(r.text()) for r in lm.requests)})
    return out


# ------------------------------------------------------------------------------------------------
# Throughput: N candidate programs x M examples on the embedded model


def throughput(job: dict[str, Any]) -> dict[str, Any]:
    import honing as hn
    from honing.lm.local import get_engine, resolve_model_path
    from honing.lm.usage import track_usage

    classify = make_task(job["intents"])
    dev = examples(job["dev"])
    candidates = []
    for demo_rows in job["candidates"]:
        program = hn.Predict(classify)
        program.demos = [{"text": r["text"], "intent": r["intent"]} for r in demo_rows]
        candidates.append(program)
    lm = hn.LM(MODEL, cache=False)
    engine = get_engine(resolve_model_path(MODEL.split("/", 1)[1]))
    out: dict[str, Any] = {"schedule": job["schedule"]}
    with hn.context(lm=lm, num_threads=1), track_usage() as spent, Stopwatch() as t:
        correct = 0
        if job["schedule"] == "candidate":  # what honing's searches do: one candidate at a time
            for program in candidates:
                correct += round(hn.Evaluate(devset=dev, metric=accuracy, num_threads=1)(program).score * len(dev))
        else:  # example-major: every candidate on one example, then the next example
            for example in dev:
                for program in candidates:
                    correct += accuracy(example, program(text=example.text))
    u = spent.total
    # the model's uncached prompt speed on this CPU right now: a fresh prompt, KV cache cleared
    engine.reset()
    probe = " ".join(f"word{i}" for i in range(400))
    with Stopwatch() as fresh:
        done = engine.complete(probe, max_tokens=1)
    engine.reset()
    out.update({"wall_s": round(t.wall, 3), "cpu_s": round(t.cpu, 3), "program_calls": len(candidates) * len(dev),
                "accuracy": round(correct / (len(candidates) * len(dev)), 4), **usage_dict(u),
                "fresh_prompt_tokens": done["prompt_tokens"], "fresh_prompt_s": round(fresh.wall, 3),
                "uncached_tok_per_s": round(done["prompt_tokens"] / fresh.wall, 1)})
    close_engine()
    return out


def embed(job: dict[str, Any]) -> dict[str, Any]:
    """Vectors of honing's default KNN embedder, for the DSPy worker to use the very same ones."""
    from honing.plugins.lookup import resolve_embedder

    embedder = resolve_embedder(None)
    texts = job["texts"]
    with Stopwatch() as t:
        vectors = embedder.embed(texts)
    return {"embedder": repr(embedder), "wall_s": round(t.wall, 3),
            "vectors": {text: [round(float(x), 6) for x in vec] for text, vec in zip(texts, vectors, strict=True)}}


def close_engine() -> None:
    from honing.lm import local

    try:
        local.get_engine(local.resolve_model_path(MODEL.split("/", 1)[1])).close()
    except Exception:  # noqa: BLE001 - nothing to close
        pass


def main() -> int:
    job, out_path = read_job()
    cache = tempfile.TemporaryDirectory(prefix="vs-dspy-honing-cache-")
    os.environ["HONING_CACHE_DIR"] = cache.name  # a fresh LM cache per measurement
    import honing

    kind = job["kind"]
    run = {"quality": quality, "overhead": overhead, "throughput": throughput, "embed": embed}[kind]
    result = run(job)
    result.update({"system": "honing", "kind": kind, "version": honing.__version__, **env_summary()})
    write_result(out_path, result)
    cache.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
