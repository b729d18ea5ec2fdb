"""Local training: LoRA on the embedded GGUF model, on the CPU, then merged and written back as a GGUF.

1. The base model's tensors are read from its GGUF (`gguf_io`) into a transformers `LlamaForCausalLM`;
   the tokenizer is the GGUF's own, through llama.cpp (honing's `LocalEngine`), so training sees exactly
   the token ids inference will see (a prompt is tokenised on its own and the answer after it, as
   choice scoring does).
2. LoRA adapters (peft) on the attention and MLP projections are trained with AdamW (or Adam, SGD),
   a linear warm-up then linear decay, loss on the answer tokens only. A tqdm bar shows the running loss.
3. The adapters' updates are added to the weights and the model is written as a GGUF (changed tensors in
   Q8_0 by default, unchanged ones copied as they were) into honing's models directory as
   ``<base>-ft-<first 12 hex of its sha256>.gguf``, with a ``.json`` beside it saying how it was made.
   llama.cpp serves it like the base model: ``LM("local/<that name>")``.
4. The round trip is checked: llama.cpp's log-likelihood of a few training answers on the written file
   is compared with the merged torch model's.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from honing.plugin_api import OptimizerError, get_engine, json_safe

from honing_finetune.checkpoint import ADAPTER_FILE, load_adapter, save_adapter
from honing_finetune.data import TrainingExample
from honing_finetune.gguf_io import BaseModel, GGUFError, build_model, sha256_file, write_gguf

log = logging.getLogger("honing.optimizers")

#: One LoRA is made and trained at a time in a process: its initialisation (and dropout) draw from torch's
#: global RNG, which a training in another thread would disturb; and one training uses every core anyway.
_training_lock = threading.Lock()
_cache_lock = threading.Lock()
_base_cache: dict[tuple[str, int, int], tuple[BaseModel, Any, dict[str, Any]]] = {}


def base_weights(path: Path) -> tuple[BaseModel, Any, dict[str, Any]]:
    """The base GGUF opened, its config and its float32 state dict (kept for the process: the last one)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        cached = _base_cache.get(key)
        if cached is None:
            base = BaseModel(path)
            cached = (base, base.config(), base.state_dict())
            _base_cache.clear()
            _base_cache[key] = cached
        return cached


def model_stem(base_name: str) -> str:
    """A file-name-safe stem for models derived from `base_name` (``smollm2-135m``, a path's stem...)."""
    stem = Path(base_name).stem if base_name.lower().endswith(".gguf") or "/" in base_name else base_name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.").lower()
    return stem or "model"


# --------------------------------------------------------------------------------------------------
# tokenising


def encode(engine: Any, example: TrainingExample, max_length: int) -> tuple[list[int], int, bool]:
    """(token ids, number of prompt tokens, truncated?) of one example, tokenised as inference does."""
    special = example.kind == "chat"
    prompt = example.prompt
    stripped = prompt.rstrip(" \t")
    lead = prompt[len(stripped):]
    p_tokens = engine.tokenize(stripped, special=special)
    c_tokens = engine.tokenize(lead + example.completion, special=special, add_bos=False)
    if not c_tokens:
        raise OptimizerError(f"training example for trainset[{example.example}] has an empty answer")
    truncated = False
    if len(p_tokens) + len(c_tokens) > max_length:
        keep = max(1, max_length - len(c_tokens))
        p_tokens = p_tokens[-keep:]
        truncated = True
    return p_tokens + c_tokens, len(p_tokens), truncated


# --------------------------------------------------------------------------------------------------
# training


def _schedule(total: int, warmup: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def _make_optimizer(name: str, params: list[Any], lr: float, weight_decay: float) -> Any:
    import torch

    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def _plan_batches(n: int, settings: dict[str, Any]) -> tuple[list[list[list[int]]], int]:
    """Optimizer steps as lists of micro-batches of example indices (seeded shuffles per epoch)."""
    bs, ga = settings["batch_size"], settings["gradient_accumulation_steps"]
    per_step = bs * ga
    steps_per_epoch = max(1, math.ceil(n / per_step))
    total = settings["max_steps"] or steps_per_epoch * settings["epochs"]
    steps: list[list[list[int]]] = []
    epoch = 0
    while len(steps) < total:
        order = list(range(n))
        random.Random(f"{settings['seed']}:epoch:{epoch}").shuffle(order)
        for start in range(0, n, per_step):
            chunk = order[start:start + per_step]
            steps.append([chunk[i:i + bs] for i in range(0, len(chunk), bs)])
            if len(steps) == total:
                break
        epoch += 1
    return steps, steps_per_epoch


def _batch(encoded: Sequence[tuple[list[int], int, bool]], indices: Sequence[int],
           pad_id: int) -> dict[str, Any]:
    import torch

    rows = [encoded[i] for i in indices]
    width = max(len(ids) for ids, _, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for r, (ids, n_prompt, _) in enumerate(rows):
        input_ids[r, :len(ids)] = torch.tensor(ids)
        attention[r, :len(ids)] = 1
        labels[r, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def _loss_sum(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """Summed cross-entropy over the answer tokens of a batch, and their count.

    The output projection (49k x hidden for SmolLM2, a fifth of the compute) runs only at the positions
    that predict an answer token, not over the whole prompt.
    """
    import torch

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal.model(input_ids=batch["input_ids"],
                          attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = causal.lm_head(hidden[:, :-1][keep])
    loss = torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum")
    return loss, int(keep.sum())


def merged_state(model: Any) -> dict[str, Any]:
    """The state dict of the base model with every LoRA update added to its weight (W + scale * B @ A),
    computed aside: the base tensors, shared with the cached base weights, are left as they were."""
    from peft.tuners.lora import LoraLayer

    causal = model.get_base_model()
    state = {k.replace(".base_layer.", "."): v for k, v in causal.state_dict().items() if ".lora_" not in k}
    for name, module in causal.named_modules():
        if isinstance(module, LoraLayer):
            weight = module.get_base_layer().weight
            delta = sum(module.get_delta_weight(adapter) for adapter in module.active_adapters)
            state[f"{name}.weight"] = (weight + delta).detach()
    return state


def lora_model(model: Any, settings: dict[str, Any]) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(settings["seed"])
    config = LoraConfig(r=settings["lora_rank"], lora_alpha=settings["lora_alpha"],
                        lora_dropout=settings["lora_dropout"],
                        target_modules=list(settings["target_modules"]), bias="none", task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():
            # peft asks transformers for a property transformers has renamed
            warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*deprecated",
                                    category=FutureWarning)
            return get_peft_model(model, config)
    except ValueError as exc:  # e.g. a target module the model does not have
        raise OptimizerError(f"BootstrapFinetune: cannot add LoRA adapters: {exc}") from None


def train(model: Any, encoded: Sequence[tuple[list[int], int, bool]], settings: dict[str, Any], *,
          pad_id: int, desc: str = "finetune") -> dict[str, Any]:
    """Train `model` (a peft model) in place; returns the loss curve and counts."""
    import torch
    from tqdm.auto import tqdm

    steps, steps_per_epoch = _plan_batches(len(encoded), settings)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(settings["optimizer"], params, settings["learning_rate"],
                                settings["weight_decay"])
    warmup = round(settings["warmup_ratio"] * len(steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(len(steps), warmup))
    torch.manual_seed(settings["seed"])
    model.train()
    curve: list[list[float]] = []
    running = None
    tokens_seen = 0
    bar = tqdm(total=len(steps), desc=desc, unit="step", dynamic_ncols=True)
    try:
        for number, micro_batches in enumerate(steps, 1):
            batches = [_batch(encoded, mb, pad_id) for mb in micro_batches]
            n_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for batch in batches:
                loss, _ = _loss_sum(model, batch)
                (loss / n_tokens).backward()
                step_loss += float(loss.detach())
            optimizer.step()
            scheduler.step()
            tokens_seen += n_tokens
            mean = step_loss / n_tokens
            if not math.isfinite(mean):
                raise OptimizerError(f"BootstrapFinetune: the training loss became {mean} at step {number}; "
                                     "lower the learning rate")
            curve.append([number, round(mean, 6)])
            running = mean if running is None else 0.9 * running + 0.1 * mean
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    finally:
        bar.close()
    model.eval()
    return {"loss": curve, "steps": len(steps), "steps_per_epoch": steps_per_epoch,
            "epochs_run": round(len(steps) / steps_per_epoch, 3), "answer_tokens_seen": tokens_seen}


def answer_logprob(model: Any, ids: list[int], n_prompt: int) -> float:
    """The torch model's log-likelihood of the answer tokens (`ids[n_prompt:]`) given the prompt."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    lp = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor(ids[1:])
    picked = lp[torch.arange(len(targets)), targets][n_prompt - 1:]
    return float(picked.sum())


def write_plot(path: Path, curve: list[list[float]], title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([p[0] for p in curve], [p[1] for p in curve], color="tab:blue", linewidth=1, label="step loss")
    if len(curve) >= 5:
        window = max(2, len(curve) // 20)
        windows = [curve[max(0, i - window + 1):i + 1] for i in range(len(curve))]
        smooth = [sum(p[1] for p in points) / len(points) for points in windows]
        ax.plot([p[0] for p in curve], smooth, color="tab:orange", linewidth=2, label=f"mean of {window}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (answer tokens, nats/token)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def train_local(*, base_path: Path, base_name: str, examples: Sequence[TrainingExample],
                settings: dict[str, Any], out_dir: Path, models_dir: Path, data_sha256: str,
                desc: str = "finetune", resume: bool = False) -> dict[str, Any]:
    """Train, merge, write and check one local model. Returns what the record keeps about it, including
    ``"model"``: the name to use as ``local/<model>``.

    The adapter is saved in `out_dir` as soon as training ends (`checkpoint`); with `resume`, an adapter
    saved there for the same base, data and settings is loaded instead of training again. A failure after
    training says where the adapter is."""
    started = time.perf_counter()
    try:
        base, config, state = base_weights(base_path)
    except GGUFError as exc:
        raise OptimizerError(f"BootstrapFinetune: cannot train {base_name!r} locally: {exc}") from None
    engine = get_engine(base_path)
    encoded = [encode(engine, e, settings["max_length"]) for e in examples]
    truncated = sum(1 for _, _, t in encoded if t)
    prompt_tokens = sum(n for _, n, _ in encoded)
    answer_tokens = sum(len(ids) - n for ids, n, _ in encoded)
    loaded = time.perf_counter()

    key = {"base_sha256": sha256_file(base_path), "data_sha256": data_sha256, "settings": json_safe(settings)}
    pad_id = config.pad_token_id if config.pad_token_id is not None else (base.eos_token_id or 0)
    with _training_lock:
        with warnings.catch_warnings():
            # peft warns that a model without a `config.json` on disk may not be a known architecture
            warnings.filterwarnings("ignore", category=UserWarning,
                                    message=r".*(Unable to fetch remote file|Could not find a config file)")
            model = lora_model(build_model(config, state, copy=False), settings)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        result = load_adapter(model, out_dir, key) if resume else None
        if result is None:
            result = train(model, encoded, settings, pad_id=pad_id, desc=desc)
            adapter = save_adapter(model, out_dir, key, result)
        else:
            adapter = out_dir / ADAPTER_FILE
            result["reused_adapter"] = str(adapter)
    trained = time.perf_counter()
    try:
        return _serve(model, base, state, examples, encoded, settings, result, base_path=base_path,
                      base_name=base_name, out_dir=out_dir, models_dir=models_dir, data_sha256=data_sha256,
                      counts={"examples": len(examples), "prompt_tokens": prompt_tokens,
                              "answer_tokens": answer_tokens, "truncated": truncated,
                              "trainable_parameters": trainable},
                      times=(started, loaded, trained), key=key)
    except Exception as exc:
        raise OptimizerError(
            f"BootstrapFinetune: training {base_name!r} finished, but making the fine-tuned GGUF failed: "
            f"{type(exc).__name__}: {exc}. The trained LoRA adapter is kept in {adapter}; compile again with "
            "resume=True and the same run_dir to write it without training again") from exc


def _serve(model: Any, base: BaseModel, state: dict[str, Any], examples: Sequence[TrainingExample],
           encoded: Sequence[tuple[list[int], int, bool]], settings: dict[str, Any],
           result: dict[str, Any], *, base_path: Path, base_name: str, out_dir: Path, models_dir: Path,
           data_sha256: str, counts: dict[str, int], times: tuple[float, float, float],
           key: dict[str, Any]) -> dict[str, Any]:
    """Merge the trained adapter into the base weights, write the GGUF into `models_dir` under its content
    hash, check llama.cpp reads it as trained, and write the sidecar, loss.json and loss.png."""
    import torch

    started, loaded, trained = times
    stem = model_stem(base_name)
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = models_dir / f".{stem}-ft.{os.getpid()}.{threading.get_ident()}.gguf.tmp"
    metadata = {"general.name": f"{stem}-ft", "honing.base_model": base_name,
                "honing.data_sha256": data_sha256,
                "honing.train_kwargs": json.dumps(json_safe(settings), sort_keys=True)}
    with torch.no_grad():
        digest = write_gguf(base, merged_state(model), tmp, tensor_type=settings["tensor_type"],
                            metadata=metadata, reference=state)
    name = f"{stem}-ft-{digest[:12]}"
    path = models_dir / f"{name}.gguf"
    if path.is_file() and path.stat().st_size == tmp.stat().st_size and sha256_file(path) == digest:
        tmp.unlink()  # the same model was written before (same base, data and settings)
    else:
        os.replace(tmp, path)
    written = time.perf_counter()
    roundtrip = check_roundtrip(model, path, examples[:4], encoded[:4])

    info = {
        "model": name,
        "path": str(path),
        "sha256": digest,
        "size_bytes": path.stat().st_size,
        "base_model": base_name,
        "base_path": str(base_path),
        "base_sha256": key["base_sha256"],
        **counts,
        "hyperparameters": json_safe(settings),
        **result,
        "roundtrip": roundtrip,
        "seconds": {"load": round(loaded - started, 2), "train": round(trained - loaded, 2),
                    "write": round(written - trained, 2), "total": round(time.perf_counter() - started, 2)},
    }
    sidecar = {k: info[k]
               for k in ("model", "sha256", "base_model", "base_sha256", "examples", "hyperparameters")}
    sidecar["data_sha256"] = data_sha256
    sidecar["created_by"] = "honing-finetune BootstrapFinetune"
    (models_dir / f"{name}.json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "loss.json").write_text(json.dumps(result["loss"]) + "\n", encoding="utf-8")
    write_plot(out_dir / "loss.png", result["loss"], f"LoRA on {base_name} ({len(examples)} examples)")
    return info


def check_roundtrip(model: Any, path: Path, examples: Sequence[TrainingExample],
                    encoded: Sequence[tuple[list[int], int, bool]]) -> dict[str, Any]:
    """llama.cpp's log-likelihood of a few answers on the written GGUF next to the torch model's."""
    engine = get_engine(path)
    deltas = []
    for example, (ids, n_prompt, truncated) in zip(examples, encoded):
        if truncated:
            continue
        ours = answer_logprob(model, ids, n_prompt)
        theirs = engine.score_choices(example.prompt, [example.completion], special=example.kind == "chat",
                                      terminator=None)["logprobs"][example.completion]
        deltas.append((ours, theirs))
    if not deltas:
        return {"examples": 0}
    worst = max(abs(a - b) for a, b in deltas)
    if worst > 1.0:
        log.warning("BootstrapFinetune: the written GGUF differs from the trained model by up to %.2f nats "
                    "on an answer's log-likelihood", worst)
    return {"examples": len(deltas), "max_abs_logprob_delta": round(worst, 4),
            "torch_logprob": round(sum(a for a, _ in deltas) / len(deltas), 4),
            "llama_cpp_logprob": round(sum(b for _, b in deltas) / len(deltas), 4)}
