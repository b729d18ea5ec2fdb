"""Local training on the embedded SmolLM2 model: the GGUF round trip, a short LoRA run, and the contract.

These load the real model (torch and llama.cpp) and are marked `local_lm`; the run takes a few minutes
on two cores.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import honing as hn
import numpy as np
import pytest
from finetune_helpers import labelled_teacher
from honing.errors import LoadError, OptimizerError
from honing.lm.local import get_engine, resolve_model_path
from honing.lm.types import LMRequest
from honing.testing.contract import (
    CONTRACT_DATA,
    ContractClassify,
    OptimizerContract,
    contract_examples,
    intent_match,
)
from honing.testing.fake import FakeLM, nearest_demo_responder
from honing_finetune import BootstrapFinetune
from honing_finetune.gguf_io import BaseModel, permute, unpermute, write_gguf
from honing_finetune.lora import base_weights

#: Prompts whose greedy continuations have no near-tie in their first tokens (F16 and Q4_1 kernels may
#: break a tie of a few hundredths of a nat differently, which is not what this test is about).
PROMPTS = [
    "The capital of France is",
    "def add(a, b):\n    return",
    "Once upon a time, there was a little",
]
CLASSIFY = ("Classify the banking customer query into one intent.\nIntent is one of: card_arrival, pin_blocked.\n\n"
            "Text: my card has not arrived\nIntent:")

#: LoRA on the query projections only: every other tensor is copied as it was, so writing is quick.
QUICK = {"max_steps": 2, "batch_size": 4, "target_modules": ["q_proj"], "learning_rate": 1e-3}


def test_permutation_round_trips() -> None:
    rows = np.arange(9 * 64 * 3, dtype=np.float32).reshape(9 * 64, 3)
    assert np.array_equal(unpermute(permute(rows, 9), 9), rows)
    assert not np.array_equal(permute(rows, 9), rows)
    # llama.cpp pairs the two rotary halves of a head: row i of the first half sits next to row i + 32
    head = permute(rows[:64], 1)
    assert np.array_equal(head[0], rows[0]) and np.array_equal(head[1], rows[32])


@pytest.mark.local_lm
def test_gguf_round_trip_reproduces_the_base_model(tmp_path: Path) -> None:
    """The base weights, read into torch and written back (every tensor re-encoded, Q/K permuted back),
    give llama.cpp the same greedy outputs as the original file, and llama.cpp on the written file
    predicts the torch model's next tokens."""
    import torch
    from honing_finetune.gguf_io import build_model

    source = resolve_model_path("smollm2-135m")
    base, config, state = base_weights(source)
    written = tmp_path / "roundtrip.gguf"
    write_gguf(base, state, written, tensor_type="f16", force=True)
    reread = BaseModel(written)
    assert {t.name for t in reread.reader.tensors} == set(base.tensors)
    assert reread.reader.fields["tokenizer.chat_template"].contents() == \
        base.reader.fields["tokenizer.chat_template"].contents()
    assert reread.tensors["blk.0.attn_q.weight"].tensor_type.name == "F16"

    original, copy = get_engine(source), get_engine(written)
    model = build_model(config, state)
    try:
        for prompt in PROMPTS:
            assert copy.complete(prompt, max_tokens=3, temperature=0)["text"] == \
                original.complete(prompt, max_tokens=3, temperature=0)["text"]
        for prompt in [*PROMPTS, CLASSIFY]:
            # llama.cpp on the written file gives the torch model's next-token distribution: its top
            # three tokens with the same log-probabilities (F16 keeps the dequantized weights exactly)
            tokens = copy.tokenize(prompt)
            with torch.no_grad():
                logprobs = torch.log_softmax(model(input_ids=torch.tensor([tokens])).logits[0, -1], -1)
            top = [int(t) for t in torch.argsort(logprobs, descending=True)[:3]]
            texts = [copy.detokenize([t]) for t in top]
            scored = copy.score_choices(prompt, texts, terminator=None)["logprobs"]
            for token, text in zip(top, texts):
                assert abs(scored[text] - float(logprobs[token])) < 0.05, (prompt, text)
            assert copy.complete(prompt, max_tokens=1, temperature=0)["text"] == texts[0]
    finally:
        copy.close()


class Code(hn.Signature):
    """Give the code of the banking customer query."""

    text: str = hn.InputField()
    code: typing.Literal["A", "B", "C"] = hn.OutputField()


CODES = {"card_arrival": "A", "exchange_rate": "B", "pin_blocked": "C"}
#: Queries of the same three kinds, worded unlike the training ones: the base model cannot know the codes.
HELD_OUT = [("my new card never came in the post", "A"), ("the card you sent me is late", "A"),
            ("what rate do you give for yen", "B"), ("how do you set the exchange rate", "B"),
            ("my pin got locked", "C"), ("wrong pin three times, now blocked", "C")]


def code_examples(rows: list[tuple[str, str]]) -> list[hn.Example]:
    return [hn.Example(text=t, code=c).with_inputs("text") for t, c in rows]


def code_match(example: hn.Example, prediction: hn.Prediction, trace: Any = None) -> bool:
    return example.code == prediction.code


def accuracy(program: hn.Module, examples: list[hn.Example]) -> float:
    return hn.Evaluate(devset=examples, metric=code_match, display_progress=False)(program).score


@pytest.mark.local_lm
def test_a_few_lora_steps_teach_the_model_the_task(tmp_path: Path, models_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Twelve LoRA steps on twelve traced calls: the loss falls, and the fine-tuned program, with no demos,
    labels held-out queries better than the base model does; the model is a GGUF served by llama.cpp,
    the saved program names it, and a machine without it gets an error naming the file."""
    trainset = code_examples([(text, CODES[intent]) for text, intent in CONTRACT_DATA])
    held_out = code_examples(HELD_OUT)
    student = hn.Predict(Code)
    teacher = labelled_teacher(student, trainset)  # answers every training query from its demos
    with hn.context(lm=FakeLM(responder=nearest_demo_responder("Text", "Code"), scoring=True)):
        compiled = BootstrapFinetune(metric=code_match, target="local/smollm2-135m", train_kwargs={
            "max_steps": 12, "batch_size": 4, "learning_rate": 3e-3}).compile(
            student, trainset=trainset, teacher=teacher, run_dir=tmp_path / "run")
    (entry,) = compiled.compile_record.candidates
    losses = [loss for _, loss in entry["loss"]]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 / 2, losses

    base = student.deepcopy()
    base.lm = hn.LM("local/smollm2-135m")
    before, after = accuracy(base, held_out), accuracy(compiled, held_out)
    trained, untrained = accuracy(compiled, trainset), accuracy(base, trainset)
    print(f"held out: {before:.2f} -> {after:.2f}; trained on: {untrained:.2f} -> {trained:.2f}")
    assert after > before and after >= 0.5 and trained > untrained, (before, after, untrained, trained)

    name = entry["model"].removeprefix("local/")
    assert name.startswith("smollm2-135m-ft-") and entry["sha256"].startswith(name.rsplit("-", 1)[1])
    assert (models_dir / f"{name}.gguf").read_bytes()[:4] == b"GGUF"
    sidecar = json.loads((models_dir / f"{name}.json").read_text())
    assert sidecar["base_model"] == "smollm2-135m" and sidecar["examples"] == entry["examples"] == 12
    assert entry["roundtrip"]["max_abs_logprob_delta"] < 0.5
    run = tmp_path / "run" / "0-local-smollm2-135m"
    assert {"train.chat.jsonl", "train.prompt.jsonl", "loss.json", "loss.png", "result.json",
            "adapter.safetensors", "adapter.json"} <= {p.name for p in run.iterdir()}
    # the data holds the teacher's passing answers, which are the labels, as choice scoring reads them
    rows = [json.loads(line) for line in (run / "train.prompt.jsonl").read_text().splitlines()]
    assert rows and all(r["completion"] == f" {trainset[r['example']].code}\n" for r in rows)
    assert all(r["prompt"].endswith("\nCode:") and "Text: " in r["prompt"] for r in rows)
    # weights only as GGUF and safetensors: nothing that unpickles
    written = {p.suffix for p in [*run.iterdir(), *models_dir.iterdir()]}
    assert written <= {".jsonl", ".json", ".png", ".safetensors", ".gguf"}, written

    predictor = compiled.predictors()[0]
    assert predictor.lm.model == entry["model"] and predictor.adapter == "transcript" and predictor.demos == []
    assert student.lm is None and student.adapter is None
    served = hn.LM(entry["model"])
    assert isinstance(served(LMRequest(prompt="Text: where is my card\nCode:", max_tokens=3)).text, str)

    saved = tmp_path / "tuned.json"
    compiled.save(saved)
    assert json.loads(saved.read_text())["predictors"][0]["lm"]["model"] == entry["model"]
    fresh = hn.Predict(Code).load(saved)
    assert [fresh(**e.inputs()).code for e in held_out] == [compiled(**e.inputs()).code for e in held_out]

    # on a machine without the model, loading fails and the error names the missing file
    monkeypatch.setenv("HONING_MODELS_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(LoadError, match=f"{name}.gguf"):
        hn.Predict(Code).load(saved)


@pytest.mark.local_lm
def test_a_failure_after_training_keeps_the_adapter_and_resume_uses_it(tmp_path: Path, models_dir: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from honing_finetune import lora
    from safetensors import safe_open

    trainset = contract_examples()
    student = hn.Predict(ContractClassify)

    def compile(resume: bool) -> hn.Module:
        with hn.context(lm=FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)):
            return BootstrapFinetune(metric=intent_match, target="local/smollm2-135m", train_kwargs=QUICK).compile(
                student, trainset=trainset, teacher=labelled_teacher(student, trainset), run_dir=tmp_path / "run",
                resume=resume)

    def disk_full(*args: Any, **kwargs: Any) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lora, "write_gguf", disk_full)
    with pytest.raises(OptimizerError, match=r"finished, but making the fine-tuned GGUF failed: OSError: .*No space "
                                             r"left.*adapter is kept in .*adapter\.safetensors.*resume=True"):
        compile(resume=False)
    adapter = tmp_path / "run" / "0-local-smollm2-135m" / "adapter.safetensors"
    with safe_open(str(adapter), framework="pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys)
    assert not list(models_dir.glob("*.gguf")) and not list(models_dir.glob(".*tmp"))

    monkeypatch.undo()
    monkeypatch.setenv("HONING_MODELS_DIR", str(models_dir))

    def no_training(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("trained again")

    monkeypatch.setattr(lora, "train", no_training)
    compiled = compile(resume=True)
    (entry,) = compiled.compile_record.candidates
    assert (models_dir / f"{entry['model'].removeprefix('local/')}.gguf").is_file()
    assert any("merged the adapter trained earlier" in n for n in compiled.compile_record.notes)
    assert len(entry["loss"]) == QUICK["max_steps"]  # the curve of the run that trained it


@pytest.mark.local_lm
class TestLocalContract(OptimizerContract):
    """The shared optimizer contract, training LoRA on the embedded model with quick settings."""

    optimizer_name = "BootstrapFinetune"

    def make_optimizer(self, **overrides: Any) -> hn.Optimizer:
        return BootstrapFinetune(**{"metric": intent_match, "target": "local/smollm2-135m", "train_kwargs": QUICK,
                                    **overrides})

    def make_lm(self) -> Any:
        return FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)

    def compile(self, optimizer: hn.Optimizer, student: hn.Module, trainset: list[hn.Example]) -> hn.Module:
        return optimizer.compile(student, trainset=trainset, teacher=labelled_teacher(student, trainset))


@pytest.mark.local_lm
def test_merged_weights_equal_the_lora_model_and_leave_the_base_intact() -> None:
    import torch
    from honing_finetune.gguf_io import build_model
    from honing_finetune.lora import lora_model, merged_state
    from honing_finetune.options import LOCAL_DEFAULTS

    _, config, state = base_weights(resolve_model_path("smollm2-135m"))
    before = state["model.layers.0.self_attn.q_proj.weight"].clone()
    model = lora_model(build_model(config, state, copy=False), {**LOCAL_DEFAULTS, "seed": 0})
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: give the update something to add
            torch.nn.init.normal_(param, std=0.01)
    merged = merged_state(model)
    assert set(merged) >= set(state)
    ids = torch.tensor([[1, 504, 6052, 281, 4779]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, build_model(config, merged)(input_ids=ids).logits,
                              atol=1e-3)
    assert torch.equal(state["model.layers.0.self_attn.q_proj.weight"], before)
    assert not torch.equal(merged["model.layers.0.self_attn.q_proj.weight"], before)
