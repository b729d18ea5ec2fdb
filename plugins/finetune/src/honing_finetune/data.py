"""Training data: a teacher's passing traces, one training example per predictor call.

A training example is exactly what the student predictor's adapter will send at inference (its own
instruction, its demos unless `exclude_demos`, the call's inputs) followed by the reply that produces the
traced outputs:

- prompt adapters (the transcript adapter, the local model's default): ``prompt`` is
  `render_prompt(...)`, ending with the first output's ``Intent:``; ``completion`` is
  ``" card_arrival\\n"``, the text that choice scoring scores (the choice with its leading space plus
  the ``"\\n"`` terminator) and that generation produces before its stop. A second output field
  continues as the adapter does: ``" v1\\nSecond: v2\\n"``.
- chat adapters (chat, JSON, any adapter whose `format` returns messages and renders demos as
  user/assistant turns): ``messages`` is the request's messages plus the assistant reply the adapter
  expects (rendered by formatting the call itself as a demo and taking its assistant turn).

Every example is written in both forms: ``{"messages": [...]}`` (what hosted fine-tuning APIs take; a
prompt becomes one user message, as the LM client sends it) and ``{"prompt", "completion"}`` (for a
prompt adapter exactly the text the local model reads; for a chat adapter the messages under the local
model's chat template when training locally, else a plain rendering).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from honing.plugin_api import (
    Adapter,
    BudgetExceeded,
    ConfigurationError,
    Example,
    Module,
    OptimizerError,
    Predict,
    Signature,
    TooManyErrors,
    metric_score,
    named_calls,
    render_value,
    settings,
    tracing,
)

CHAT_FILE = "train.chat.jsonl"
PROMPT_FILE = "train.prompt.jsonl"


@attrs.frozen
class Run:
    """One teacher run that passed: the trainset index and its predictor calls, in call order."""

    index: int
    score: float
    records: tuple[tracing.TraceRecord, ...]


@attrs.frozen
class Traces:
    """The outcome of running the teacher over the trainset."""

    passed: tuple[Run, ...]
    tried: int
    failed_metric: int
    errors: dict[int, str]

    def summary(self) -> str:
        parts = [f"{len(self.passed)} of {self.tried} teacher runs passed"]
        if self.failed_metric:
            parts.append(f"{self.failed_metric} failed the metric")
        if self.errors:
            first = next(iter(self.errors.items()))
            parts.append(f"{len(self.errors)} raised errors (first: trainset[{first[0]}]: {first[1]})")
        return ", ".join(parts)


def collect_traces(teacher: Module, trainset: Sequence[Example], metric: Callable[..., Any] | None, *,
                   num_threads: int = 1, max_errors: int | None = None) -> Traces:
    """Run `teacher` on every trainset example under `hn.trace()`; keep the runs that pass `metric`
    (every run when there is no metric). Examples run `num_threads` at a time; the result is in trainset
    order whatever the threads do. Errors are counted (`max_errors` + 1 of them raise TooManyErrors);
    a BudgetExceeded or a configuration error stops the collection."""

    def run(index: int) -> tuple[int, Run | None, str | None]:
        example = trainset[index]
        try:
            with tracing.trace() as trace, named_calls(teacher):
                prediction = teacher(**example.inputs())
            records = tuple(trace.records)
            score = metric_score(metric, example, prediction, records) if metric is not None else 1.0
        except (BudgetExceeded, ConfigurationError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - counted against max_errors, reported in the record
            return index, None, f"{type(exc).__name__}: {exc}"
        return index, (Run(index, score, records) if score else None), None

    from tqdm.auto import tqdm

    passed: list[Run] = []
    errors: dict[int, str] = {}
    failed = 0
    bar = tqdm(total=len(trainset), desc="teacher traces", unit="example", dynamic_ncols=True)
    try:
        for future in settings.map_in_threads(run, range(len(trainset)), max(1, num_threads)):
            index, result, error = future.result()
            if error is not None:
                errors[index] = error
                if max_errors is not None and len(errors) > max_errors:
                    partial = Traces(tuple(sorted(passed, key=lambda r: r.index)), index + 1, failed, errors)
                    raise TooManyErrors(f"BootstrapFinetune: {len(errors)} teacher runs failed (max_errors="
                                        f"{max_errors}); last at trainset[{index}]: {error}", partial=partial)
            elif result is None:
                failed += 1
            else:
                passed.append(result)
            bar.update(1)
            bar.set_postfix(passed=len(passed), errors=len(errors))
    finally:
        bar.close()
    passed.sort(key=lambda r: r.index)
    return Traces(tuple(passed), len(trainset), failed, errors)


@attrs.frozen
class TrainingExample:
    """One predictor call as training data, in both forms (see the module docstring)."""

    predictor: str
    example: int
    adapter: str
    messages: tuple[dict[str, str], ...]
    prompt: str
    completion: str
    #: "prompt": `prompt` + `completion` is exactly the text the model reads (a prompt adapter); "chat": the
    #: same, rendered with the target model's chat template (special tokens included); "rendered": a
    #: readable stand-in for a chat request (hosted targets train on `messages`)
    kind: str = "prompt"

    def chat_row(self) -> dict[str, Any]:
        return {"messages": [dict(m) for m in self.messages]}

    def prompt_row(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "completion": self.completion}


def is_prompt_adapter(adapter: Adapter) -> bool:
    """Adapters that send one raw prompt per output field (the transcript family)."""
    return callable(getattr(adapter, "render_prompt", None))


def adapter_label(adapter: Adapter) -> str:
    return getattr(adapter, "name", None) or type(adapter).__name__


def transcript_completion(signature: type[Signature], outputs: Mapping[str, Any]) -> str:
    """The text a prompt adapter's model produces after the prompt: ``" v1\\nPrefix2: v2\\n"``."""
    fields = signature.output_fields
    parts = []
    for i, field in enumerate(fields):
        parts.append(f" {render_value(outputs[field.name])}")
        if i + 1 < len(fields):
            parts.append(f"\n{fields[i + 1].prefix}:")
    return "".join(parts) + "\n"


def chat_reply(adapter: Adapter, signature: type[Signature], inputs: Mapping[str, Any],
               outputs: Mapping[str, Any]) -> str:
    """The assistant reply a chat-family adapter expects for these outputs: format the call itself as a
    demo and take the assistant turn it renders (so any adapter that renders demos as turns works)."""
    request = adapter.format(signature, [{**inputs, **outputs}], inputs)
    messages = list(request.messages or ())
    turns = [m for m in messages[:-1] if m["role"] == "assistant"]
    if request.messages is None or not turns:
        raise OptimizerError(f"BootstrapFinetune cannot make training data with the "
                             f"{adapter_label(adapter)!r} adapter: it neither renders a prompt nor shows "
                             "demos as assistant turns")
    return turns[-1]["content"]


def make_example(adapter: Adapter, predictor: Predict, name: str, record: tracing.TraceRecord, index: int, *,
                 exclude_demos: bool,
                 chat_template: Callable[[Sequence[Mapping[str, str]]], str] | None = None,
                 end_of_turn: str = "") -> TrainingExample:
    """The training example for one traced call of `predictor` (the student's, whose signature and demos
    the prompt uses). `chat_template` renders messages as the target model's prompt (local training with
    a chat adapter); `end_of_turn` is what the model emits after a chat reply."""
    signature = predictor.signature
    demos = [] if exclude_demos else list(predictor.demos)
    inputs = {f.name: record.inputs[f.name] for f in signature.input_fields}
    missing = [f.name for f in signature.output_fields if f.name not in record.outputs]
    if missing:
        raise OptimizerError(f"the teacher's call of predictor {name!r} has no output(s) {missing}")
    outputs = {f.name: record.outputs[f.name] for f in signature.output_fields}
    label = adapter_label(adapter)
    if is_prompt_adapter(adapter):
        prompt = adapter.render_prompt(signature, demos, inputs)  # type: ignore[attr-defined]
        completion = transcript_completion(signature, outputs)
        messages = ({"role": "user", "content": prompt},
                    {"role": "assistant", "content": completion.strip()})
        return TrainingExample(name, index, label, messages, prompt, completion)
    request = adapter.format(signature, demos, inputs)
    if request.messages is None:
        raise OptimizerError(f"the {label!r} adapter sends a raw prompt but has no render_prompt(); "
                             "BootstrapFinetune cannot tell where the answer starts")
    reply = chat_reply(adapter, signature, inputs, outputs)
    messages = (*request.messages, {"role": "assistant", "content": reply})
    if chat_template is not None:
        return TrainingExample(name, index, label, messages, chat_template(request.messages),
                               reply + end_of_turn, kind="chat")
    prompt = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in request.messages) + "<|assistant|>\n"
    return TrainingExample(name, index, label, messages, prompt, reply, kind="rendered")


def write_jsonl(examples: Sequence[TrainingExample], directory: Path) -> dict[str, Any]:
    """Write both forms into `directory`; returns the file names, the count and a digest of the data."""
    directory.mkdir(parents=True, exist_ok=True)
    chat = "".join(json.dumps(e.chat_row(), ensure_ascii=False) + "\n" for e in examples)
    prompt = "".join(json.dumps({**e.prompt_row(), "predictor": e.predictor, "example": e.example},
                                ensure_ascii=False) + "\n" for e in examples)
    (directory / CHAT_FILE).write_text(chat, encoding="utf-8")
    (directory / PROMPT_FILE).write_text(prompt, encoding="utf-8")
    digest = hashlib.sha256((chat + prompt).encode("utf-8")).hexdigest()
    return {"chat_file": str(directory / CHAT_FILE), "prompt_file": str(directory / PROMPT_FILE),
            "examples": len(examples), "sha256": digest}


def shuffled(examples: Sequence[TrainingExample], seed: Any) -> list[TrainingExample]:
    """The examples in a seeded order (trainset order otherwise groups runs by example)."""
    out = list(examples)
    random.Random(f"{seed}:finetune-data").shuffle(out)
    return out
