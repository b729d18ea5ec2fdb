"""One measurement of DSPy 3.4.1, run in its own process under DSPy's own venv (``.venv-dspy``).

    .venv-dspy/bin/python bench/vs_dspy/dspy_worker.py JOB.json OUT.json

Same jobs as `honing_worker.py`. The embedded model is reached the way a DSPy user reaches a local
GGUF: `dspy.LM("openai/<alias>", api_base=<llama_cpp.server on 127.0.0.1>)` through litellm. Only
DSPy's public API is used; nothing of DSPy is patched.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# DSPy refreshes litellm's model-price map from GitHub on the first LM call (a 5 s timeout per try);
# offline that stalls for minutes, so use the bundled copy, as honing does.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from jobio import INSTRUCTION, Stopwatch, env_summary, profiled, read_job, scripted_answer, write_result  # noqa: E402


PROMPT_MAX_TOKENS = 256  # MIPROv2's prompt model (instruction proposals, data summaries)


def make_task(intents: list[str]) -> Any:
    import dspy

    literal = typing.Literal[tuple(intents)]  # type: ignore[valid-type]
    return dspy.Signature({"text": (str, dspy.InputField()), "intent": (literal, dspy.OutputField())}, INSTRUCTION)


def examples(rows: list[dict[str, str]]) -> list[Any]:
    import dspy

    return [dspy.Example(text=r["text"], intent=r["intent"]).with_inputs("text") for r in rows]


def accuracy(example: Any, prediction: Any, trace: Any = None) -> bool:
    return example.intent == prediction.intent


def served_lm(s: dict[str, Any], *, temperature: float, max_tokens: int) -> Any:
    """A `dspy.LM` for the served GGUF, through litellm as a DSPy user reaches it.

    litellm sends DSPy's `max_tokens` to an OpenAI-compatible server as `max_completion_tokens`, which
    llama_cpp.server ignores: replies then run on for hundreds of tokens (we saw 1,033) after the answer.
    The server's own `max_tokens` field, passed through `extra_body`, is what caps them.
    """
    import dspy

    return dspy.LM(f"openai/{s['model_alias']}", api_base=s["api_base"], api_key="local", model_type=s["model_type"],
                   temperature=temperature, max_tokens=max_tokens, num_retries=1, extra_body={"max_tokens": max_tokens})


def configure_lm(job: dict[str, Any]) -> Any:
    """The served GGUF through litellm, with the job's adapter setting."""
    import dspy

    s = job["dspy"]
    lm = served_lm(s, temperature=s["temperature"], max_tokens=s["max_tokens"])
    adapters = {"chat": lambda: dspy.ChatAdapter(), "json": lambda: dspy.JSONAdapter(),
                "xml": lambda: dspy.XMLAdapter(), "chat_nofallback": lambda: dspy.ChatAdapter(use_json_adapter_fallback=False)}
    # One client thread and no error cap. The served model runs one sequence at a time, so more client
    # threads add no throughput; worse, DSPy's executor re-submits any call running > 120 s while few
    # remain (its straggler rule), which on a slow shared CPU duplicates requests until they time out.
    # And SmolLM2's replies often fail DSPy's parser: with the default cap of 10 errors a compile aborts
    # instead of scoring those examples 0, as honing does. A careful user sets both.
    dspy.configure(lm=lm, adapter=adapters[s["adapter"]](), num_threads=1, max_errors=10**6)
    return lm


def lm_usage(lm: Any, start: int = 0) -> dict[str, Any]:
    history = lm.history[start:]
    prompt = sum(int((h.get("usage") or {}).get("prompt_tokens") or 0) for h in history)
    completion = sum(int((h.get("usage") or {}).get("completion_tokens") or 0) for h in history)
    return {"calls": len(history), "prompt_tokens": prompt, "completion_tokens": completion}


def make_optimizer(method: str, job: dict[str, Any], train: list[Any]) -> Any:
    import dspy

    p = job["params"]
    threads = p.get("num_threads") or 1
    if method == "labeled":
        return dspy.LabeledFewShot(k=p["labeled_k"])
    if method == "random_search":
        kw = {k: p[k] for k in ("max_labeled_demos", "max_bootstrapped_demos") if p.get(k) is not None}
        return dspy.BootstrapFewShotWithRandomSearch(accuracy, num_candidate_programs=p["num_candidates"],
                                                     num_threads=threads, max_errors=10**6, **kw)
    if method == "knn":
        return dspy.KNNFewShot(k=p["knn_k"], trainset=train, vectorizer=dspy.Embedder(lookup_embedder(job)))
    if method == "mipro_light":
        # The task model answers in 64 tokens; the prompt model writes whole instructions (and, under the
        # JSON adapter, wraps them in JSON), so a careful user gives it room: 256 tokens, temperature as
        # MIPROv2 sets it per proposal. honing's proposer gets 96.
        prompt_lm = served_lm(job["dspy"], temperature=1.0, max_tokens=PROMPT_MAX_TOKENS)
        return dspy.MIPROv2(accuracy, prompt_model=prompt_lm, auto="light", num_threads=threads, max_errors=10**6,
                            seed=p["optimizer_seed"] or 9)
    raise SystemExit(f"unknown method {method!r}")


def lookup_embedder(job: dict[str, Any]) -> Any:
    """The vectors honing's default embedder gave for these texts (so both KNNs see the same space).

    DSPy renders an example as ``"text: <value>"``; the value is looked up.
    """
    import numpy as np

    table = {t: np.asarray(v, dtype=np.float32) for t, v in job["vectors"].items()}

    def embed(texts: list[str]) -> Any:
        rows = []
        for text in texts:
            key = text[len("text: "):] if text.startswith("text: ") else text
            vec = table[key.strip()]
            rows.append(vec / (np.linalg.norm(vec) or 1.0))
        return np.stack(rows)

    return embed


def quality(job: dict[str, Any]) -> dict[str, Any]:
    import dspy

    classify = make_task(job["intents"])
    train, val, dev = examples(job["train"]), examples(job["val"]), examples(job["dev"])
    lm = configure_lm(job)
    method = job["method"]
    student = dspy.Predict(classify)
    p = job["params"]
    optimizer = None if method == "zero_shot" else make_optimizer(method, job, train)
    with Stopwatch() as compile_time:
        if optimizer is None:
            program = student
        elif method == "labeled":
            program = optimizer.compile(student, trainset=train)
        elif method == "knn":
            program = optimizer.compile(student)
        else:
            program = optimizer.compile(student, trainset=train, valset=val)
    compile_usage = lm_usage(lm)
    prompt_lm = getattr(optimizer, "prompt_model", None)
    if prompt_lm is not None and prompt_lm is not lm:  # MIPROv2's own prompt model: its calls count too
        extra = lm_usage(prompt_lm)
        compile_usage = {k: compile_usage[k] + extra[k] for k in compile_usage}
        compile_usage["prompt_model_calls"] = extra["calls"]
    n_hist = len(lm.history)
    with Stopwatch() as eval_time:
        result = dspy.Evaluate(devset=dev, metric=accuracy, num_threads=p.get("num_threads") or 1,
                               display_progress=False, max_errors=len(dev) + 1)(program)
    val_score = None
    cands = getattr(program, "candidate_programs", None)
    if cands:
        val_score = round(max(c["score"] for c in cands) / 100, 4)
    return {"method": method, "dev_acc": round(result.score / 100, 4), "val_score": val_score,
            "compile_wall_s": round(compile_time.wall, 3), "compile_cpu_s": round(compile_time.cpu, 3),
            "eval_wall_s": round(eval_time.wall, 3), "eval_cpu_s": round(eval_time.cpu, 3),
            "compile_usage": compile_usage, "eval_usage": lm_usage(lm, n_hist),
            "demos": sum(len(q.demos) for q in program.predictors()) if hasattr(program, "predictors") else None}


# ------------------------------------------------------------------------------------------------
# Compile overhead with an instant scripted LM


_QUERY = re.compile(r"\[\[ ## text ## \]\]\n(.*)")


def scripted_lm(job: dict[str, Any]) -> Any:
    """A `dspy.BaseLM` answering `jobio.scripted_answer` in DSPy's chat-adapter format, instantly.

    It reads the query from the last ``[[ ## text ## ]]`` section, like the honing fake reads the last
    ``Text:`` line, and returns an OpenAI-shaped response (no HTTP, no litellm, no cache).
    """
    import dspy

    answers = {r["text"]: scripted_answer(r["text"], r["intent"], job["intents"])
               for split in ("train", "val", "dev") for r in job[split]}

    class ScriptedLM(dspy.BaseLM):
        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            content = messages[-1]["content"] if messages else str(prompt)
            found = _QUERY.findall(content)
            answer = answers.get(found[-1].strip(), job["intents"][0]) if found else job["intents"][0]
            text = f"[[ ## intent ## ]]\n{answer}\n\n[[ ## completed ## ]]"
            return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=text), finish_reason="stop")],
                                   usage={"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                                   model="scripted")

    return ScriptedLM(model="scripted/fake", model_type="chat", temperature=0.0, max_tokens=64, cache=False)


def overhead(job: dict[str, Any]) -> dict[str, Any]:
    with Stopwatch() as imports:
        import dspy
        classify = make_task(job["intents"])
    p = job["params"]
    train, val, dev = examples(job["train"]), examples(job["val"]), examples(job["dev"])
    lm = scripted_lm(job)
    dspy.configure(lm=lm, adapter=dspy.ChatAdapter())
    out: dict[str, Any] = {"op": job["op"], "import_s": round(imports.wall, 3)}
    if job["op"] == "compile":
        optimizer = dspy.BootstrapFewShotWithRandomSearch(
            accuracy, num_candidate_programs=p["num_candidates"], max_bootstrapped_demos=p["max_bootstrapped_demos"],
            max_labeled_demos=p["max_labeled_demos"], num_threads=p["num_threads"])
        with Stopwatch() as t:
            program, prof = profiled(job.get("profile", False),
                                     lambda: optimizer.compile(dspy.Predict(classify), trainset=train, valset=val))
        out["val_score"] = max(c["score"] for c in program.candidate_programs) / 100
        out["demos"] = sum(len(q.demos) for q in program.predictors())
    else:
        program = dspy.Predict(classify)
        evaluate = dspy.Evaluate(devset=dev, metric=accuracy, num_threads=p["num_threads"], display_progress=False)
        with Stopwatch() as t:
            result, prof = profiled(job.get("profile", False), lambda: evaluate(program))
        out["score"] = result.score / 100
    out.update({"wall_s": round(t.wall, 4), "cpu_s": round(t.cpu, 4), "lm_calls": len(lm.history), "profile": prof})
    return out


# ------------------------------------------------------------------------------------------------
# Throughput: N candidate programs x M examples on the served embedded model


def throughput(job: dict[str, Any]) -> dict[str, Any]:
    import dspy

    classify = make_task(job["intents"])
    dev = examples(job["dev"])
    lm = configure_lm(job)
    candidates = []
    for demo_rows in job["candidates"]:
        program = dspy.Predict(classify)
        program.demos = [dspy.Example(text=r["text"], intent=r["intent"]) for r in demo_rows]
        candidates.append(program)
    threads = job["params"].get("num_threads") or 1
    with Stopwatch() as t:
        correct = 0.0
        if job["schedule"] == "candidate":  # what DSPy's RandomSearch does: Evaluate per candidate
            for program in candidates:
                res = dspy.Evaluate(devset=dev, metric=accuracy, num_threads=threads, display_progress=False,
                                    max_errors=len(dev) + 1)(program)
                correct += res.score / 100 * len(dev)
        else:
            for example in dev:
                for program in candidates:
                    try:
                        correct += accuracy(example, program(text=example.text))
                    except Exception:  # noqa: BLE001 - a parse failure scores 0, as in Evaluate
                        pass
    u = lm_usage(lm)
    return {"schedule": job["schedule"], "wall_s": round(t.wall, 3), "cpu_s": round(t.cpu, 3),
            "program_calls": len(candidates) * len(dev), "accuracy": round(correct / (len(candidates) * len(dev)), 4),
            **u}


def main() -> int:
    job, out_path = read_job()
    cache = tempfile.TemporaryDirectory(prefix="vs-dspy-dspy-cache-")
    os.environ["DSPY_CACHEDIR"] = cache.name  # a fresh LM cache per measurement (set before import)
    import dspy

    kind = job["kind"]
    run = {"quality": quality, "overhead": overhead, "throughput": throughput}[kind]
    result = run(job)
    result.update({"system": "dspy", "kind": kind, "version": dspy.__version__, **env_summary()})
    write_result(out_path, result)
    cache.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
