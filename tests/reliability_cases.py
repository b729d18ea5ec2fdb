"""Shared by the reliability tests and `bench/reliability.py`: a task every optimizer can compile against
the loopback server, a server responder that behaves like a model learning from its demos, and one quick
configuration per optimizer in the registry.

`cases()` iterates over the optimizer registry, so an optimizer added by a new plugin is covered by every
reliability test at once: it gets quick settings from `QUICK` when it is listed there, else it is built
with ``cls(metric=...)`` (or ``cls()``) and compiled the ordinary way.
"""

from __future__ import annotations

import inspect
import itertools
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import honing as hn

Intent = typing.Literal["card_arrival", "exchange_rate", "pin_blocked", "unknown"]


class Classify(hn.Signature):
    """Classify the banking customer query into one intent."""

    text: str = hn.InputField()
    intent: Intent = hn.OutputField()


DATA = [
    ("where is my new card, it has not arrived", "card_arrival"),
    ("my card still has not arrived after two weeks", "card_arrival"),
    ("how long does card delivery take", "card_arrival"),
    ("what exchange rate do you use for euros", "exchange_rate"),
    ("is the exchange rate good for dollars", "exchange_rate"),
    ("how is the currency exchange rate calculated", "exchange_rate"),
    ("my pin is blocked after three tries", "pin_blocked"),
    ("I entered the wrong pin and it is blocked", "pin_blocked"),
    ("how do I unblock my pin", "pin_blocked"),
]
DEV = [
    ("the card I ordered has not arrived yet", "card_arrival"),
    ("when does my card arrive", "card_arrival"),
    ("which exchange rate applies to my transfer", "exchange_rate"),
    ("exchange rate for pounds please", "exchange_rate"),
    ("pin blocked, what now", "pin_blocked"),
    ("my pin got blocked", "pin_blocked"),
]


#: How many examples, at the start of the trainset and of the devset, the server cannot answer (their
#: text contains `POISON`): a test sets it to check `max_errors`.
POISONED = 0


def examples(rows: list[tuple[str, str]]) -> list[hn.Example]:
    return [hn.Example(text=f"{POISON} {t}" if i < POISONED else t, intent=label).with_inputs("text")
            for i, (t, label) in enumerate(rows)]


def trainset() -> list[hn.Example]:
    return examples(DATA)


def devset() -> list[hn.Example]:
    return examples(DEV)


def metric(example: hn.Example, prediction: hn.Prediction, trace: Any = None) -> bool:
    return example.intent == prediction.intent


def student() -> hn.Module:
    return hn.Predict(Classify)


# ----------------------------------------------------------------------------------------------------
# the server's replies

_TAG = re.compile(r"<(\w+)>(.*?)</\1>", re.DOTALL)
_WORD = re.compile(r"[a-z0-9]+")
POISON = "POISON"


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _tags(text: str) -> dict[str, str]:
    return {k: v.strip() for k, v in _TAG.findall(text or "")}


def demo_responder(body: dict[str, Any]) -> str:
    """Answer a chat-adapter request like a model that learns from its demos.

    The `intent` is the label of the demo (user/assistant turn pair) sharing most words with the query,
    or "unknown" without one, so good demos raise accuracy. Any other output field the system message
    lists (an instruction proposal, a summary...) gets a short plain answer. A query containing
    `POISON` gets an untagged reply that no adapter can parse (a deterministic per-example error).
    """
    messages = body.get("messages") or []
    system = next((m.get("content") or "" for m in messages if m.get("role") == "system"), "")
    query = messages[-1].get("content") if messages else ""
    query = query if isinstance(query, str) else str(query)
    if POISON in query:
        return "<<< I cannot answer that >>>"
    outputs = re.findall(r"^- (\w+)", system.split("Outputs:", 1)[-1], re.MULTILINE) if "Outputs:" in system else []
    reply = []
    for field in outputs or ["intent"]:
        if field == "intent":
            reply.append(f"<intent>{_nearest_label(messages, query)}</intent>")
        elif field == "reasoning":
            reply.append("<reasoning>Look at the closest example.</reasoning>")
        else:
            reply.append(f"<{field}>Classify the banking customer query into one intent, carefully.</{field}>")
    return "\n".join(reply)


def _nearest_label(messages: list[dict[str, Any]], query: str) -> str:
    text = _tags(query).get("text", query)
    best, best_overlap = "unknown", 0
    for user, assistant in itertools.pairwise(messages[1:-1]):
        if user.get("role") != "user" or assistant.get("role") != "assistant":
            continue
        demo_text = _tags(user.get("content") or "").get("text")
        label = _tags(assistant.get("content") or "").get("intent")
        if demo_text is None or label is None:
            continue
        overlap = len(_words(demo_text) & _words(text))
        if overlap > best_overlap:
            best, best_overlap = label, overlap
    return best


# ----------------------------------------------------------------------------------------------------
# one quick configuration per optimizer


@attrs.frozen
class Env:
    """What a case needs to build its optimizer: the server's URL and the LM pointing at it."""

    url: str
    lm: Any
    run_dir: Path | None = None


@attrs.frozen
class Case:
    name: str
    cls: type
    make: Callable[[Env, dict[str, Any]], Any]  # (env, overrides) -> optimizer
    compile: Callable[[Any, Env, dict[str, Any]], Any]  # (optimizer, env, compile kwargs) -> program
    #: the server must also serve the files and fine-tuning routes
    fine_tuning: bool = False


def _plain_compile(optimizer: Any, env: Env, kwargs: dict[str, Any]) -> Any:
    return optimizer.compile(student(), trainset=trainset(), valset=devset(), **kwargs)


def _ensemble_compile(optimizer: Any, env: Env, kwargs: dict[str, Any]) -> Any:
    members = []
    for k in (2, 3, 4):
        member = student()
        member.predictors()[0].demos = [{"text": t, "intent": i} for t, i in DATA[::k]]
        members.append(member)
    return optimizer.compile(members, trainset=trainset(), valset=devset(), **kwargs)


def _finetune_compile(optimizer: Any, env: Env, kwargs: dict[str, Any]) -> Any:
    teacher = student()
    teacher.predictors()[0].demos = [{"text": t, "intent": i} for t, i in DATA]
    return optimizer.compile(student(), trainset=trainset(), teacher=teacher, **kwargs)


def _quick(**params: Any) -> Callable[[Env, dict[str, Any]], dict[str, Any]]:
    return lambda env, overrides: {**params, **overrides}


def _knn_params(env: Env, overrides: dict[str, Any]) -> dict[str, Any]:
    # embeddings from the loopback server too (its /v1/embeddings is faulted like the chat route)
    from honing.plugins.lookup import resolve_embedder

    embedder = resolve_embedder("openai/text-embedding-3-small", api_base=env.url, api_key="sk-test",
                                timeout=env.lm.timeout, num_retries=8)
    return {"k": 3, "bootstrap": True, "metric": metric, "seed": 0, "embedder": embedder, **overrides}


def _finetune_params(env: Env, overrides: dict[str, Any]) -> dict[str, Any]:
    target = hn.LM("openai/gpt-4o-mini-2024-07-18", api_base=env.url, api_key="sk-test",
                   retry_base=0.01, retry_cap=0.05, timeout=env.lm.timeout)
    return {"metric": metric, "target": target, "seed": 0,
            "train_kwargs": {"epochs": 1, "poll_interval": 0.01, "timeout": 30}, **overrides}


#: Quick settings per optimizer name: a function (env, overrides) -> constructor kwargs.
QUICK: dict[str, Callable[[Env, dict[str, Any]], dict[str, Any]]] = {
    "LabeledFewShot": _quick(k=4, seed=0),
    "BootstrapFewShot": _quick(metric=metric, max_bootstrapped_demos=3, max_labeled_demos=4),
    "BootstrapFewShotWithRandomSearch": _quick(metric=metric, num_candidate_programs=3, max_bootstrapped_demos=2,
                                               max_labeled_demos=4, seed=0),
    "BootstrapFewShotWithOptuna": _quick(metric=metric, num_candidate_programs=3, max_bootstrapped_demos=2,
                                         max_labeled_demos=4, seed=0),
    "Ensemble": _quick(metric=metric, seed=0),
    "SignatureOptimizer": _quick(metric=metric, breadth=2, depth=1, seed=0),
    "BayesianSignatureOptimizer": _quick(metric=metric, auto=None, num_candidates=2, num_trials=3,
                                         max_bootstrapped_demos=2, max_labeled_demos=3, minibatch=False, seed=0,
                                         confidence_z=0.0),
    "KNNFewShot": _knn_params,
    "BootstrapFinetune": _finetune_params,
}

COMPILE: dict[str, Callable[[Any, Env, dict[str, Any]], Any]] = {
    "Ensemble": _ensemble_compile,
    "BootstrapFinetune": _finetune_compile,
}


def _generic(cls: type) -> Callable[[Env, dict[str, Any]], dict[str, Any]]:
    def params(env: Env, overrides: dict[str, Any]) -> dict[str, Any]:
        accepted = inspect.signature(cls).parameters
        base = {"metric": metric} if "metric" in accepted else {}
        if "seed" in accepted:
            base["seed"] = 0
        return {**base, **overrides}

    return params


def cases() -> list[Case]:
    """One case per optimizer in the registry, in name order."""
    from honing.plugins.registry import optimizer_registry

    out = []
    for name in sorted(optimizer_registry().names()):
        cls = optimizer_registry().get(name).obj
        params = QUICK.get(name) or _generic(cls)

        def make(env: Env, overrides: dict[str, Any], cls: type = cls, params: Any = params) -> Any:
            return cls(**params(env, dict(overrides)))

        out.append(Case(name, cls, make, COMPILE.get(name, _plain_compile), fine_tuning=name == "BootstrapFinetune"))
    return out


def accepts(optimizer_or_cls: Any, parameter: str) -> bool:
    cls = optimizer_or_cls if isinstance(optimizer_or_cls, type) else type(optimizer_or_cls)
    return parameter in inspect.signature(cls).parameters


def server_lm(url: str, **options: Any) -> Any:
    """An LM on the loopback server with fast retries (a test must not sleep for seconds)."""
    args = {"api_key": "sk-test", "retry_base": 0.005, "retry_cap": 0.02, "max_retry_after": 0.05,
            "timeout": 0.5, "num_retries": 8, **options}
    return hn.LM("openai/test-model", api_base=url, **args)


# ----------------------------------------------------------------------------------------------------
# one compile against a fresh server


@attrs.define
class Outcome:
    """What one compile did: the program (or the error it raised), the server's record, the run dir."""

    case: Case
    program: Any
    error: BaseException | None
    requests: list[Any]
    run_dir: Path
    seconds: float
    clean_score: float | None = None

    @property
    def record(self) -> Any:
        return None if self.program is None else self.program.compile_record

    @property
    def lm_requests(self) -> list[Any]:
        """Chat requests (what a Budget counts): faulted ones included."""
        return [r for r in self.requests if r.path == "/v1/chat/completions"]

    @property
    def faults(self) -> list[str]:
        return [r.fault for r in self.requests if r.fault != "ok"]

    def events(self) -> list[dict[str, Any]]:
        from honing.runs import EVENTS, read_events

        path = self.run_dir / EVENTS
        return read_events(path) if path.exists() else []


def compile_case(case: Case, workdir: Path, *, faults: Any = None, budget: Any = None, cache_dir: Path | None = None,
                 overrides: dict[str, Any] | None = None, context: dict[str, Any] | None = None,
                 script: list[str] | None = None, evaluate: bool = False) -> Outcome:
    """Compile `case` against a fresh loopback server (with `faults`, a FaultPlan), in a fresh LM cache,
    under `budget`; never raises (the error is in the outcome). With `evaluate`, the compiled program is
    then scored on the devset with the faults turned off (`Outcome.clean_score`)."""
    import time

    from honing.lm.cache import DiskCache
    from honing.testing.server import OpenAICompatServer

    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = workdir / "run"
    cache = DiskCache(cache_dir or workdir / "cache")
    with OpenAICompatServer(responder=demo_responder, faults=faults, timeout_sleep=1.0, retry_after=0.01,
                            fine_tuning=case.fine_tuning, max_lifetime=300) as server:
        if script:
            server.script(script)
        lm = server_lm(server.url, cache=cache)
        env = Env(server.url, lm, run_dir=run_dir)
        started = time.perf_counter()
        program = error = None
        try:
            with hn.context(lm=lm, budget=budget, **(context or {})):
                optimizer = case.make(env, dict(overrides or {}))
                program = case.compile(optimizer, env, {"run_dir": run_dir})
        except Exception as exc:  # noqa: BLE001 - the caller asserts on it
            error = exc
        seconds = time.perf_counter() - started
        requests = server.requests
        score = evaluate_clean(program, server, workdir) if evaluate and program is not None else None
    return Outcome(case, program, error, requests, run_dir, seconds, score)


def evaluate_clean(program: Any, server: Any, workdir: Path) -> float:
    """The program's devset score with the server's faults off and a fresh LM cache (so no reply cached
    during a faulty compile, e.g. garbage, is reused)."""
    from honing.lm.cache import DiskCache
    from honing.testing.server import FaultPlan

    server.set_faults(FaultPlan(rate=0.0))
    cache = DiskCache(workdir / "eval-cache")
    lm = server_lm(server.url, cache=cache)
    program = program.deepcopy()
    for predictor in program.predictors():
        if predictor.lm is not None:  # e.g. the fine-tuned model: the same LM with the fresh cache
            predictor.lm = predictor.lm.copy(cache=cache)
    with hn.context(lm=lm):
        return hn.Evaluate(devset=devset(), metric=metric, num_threads=1)(program).score
