"""GGUF in and out: the local model's weights as a torch model, and trained weights back as a GGUF.

Reading (`load_llama`): the tensors of a llama-architecture GGUF are dequantized with the `gguf`
package and loaded into a `transformers` `LlamaForCausalLM` built from the file's own metadata, so no
Hugging Face download is needed: the weights are exactly the ones llama.cpp runs. llama.cpp stores the
Q and K projections with their rows permuted (its converter interleaves the two rotary halves of every
head, `LlamaModel.permute` in llama.cpp's `convert_hf_to_gguf.py`); reading undoes that permutation and
writing redoes it.

Writing (`write_gguf`): every metadata key of the base file (architecture, hyperparameters, tokenizer,
chat template) is copied; a tensor whose values did not change is copied byte for byte in its original
encoding; a changed one is written as Q8_0 (default) or F16. The file is written to a temporary name,
hashed (sha256) and renamed, so a half-written model is never picked up.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

#: Tensor types the writer can encode changed tensors in.
OUTPUT_TYPES = ("q8_0", "f16", "f32")

_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")
_PER_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


class GGUFError(ValueError):
    """A GGUF file that cannot be fine-tuned here (not llama architecture, unknown tensors...)."""


def hf_name(gguf_name: str) -> str:
    """The transformers parameter name of a llama.cpp tensor name (``blk.3.attn_q.weight`` ->
    ``model.layers.3.self_attn.q_proj.weight``)."""
    if gguf_name in _GLOBAL:
        return _GLOBAL[gguf_name]
    m = _LAYER.match(gguf_name)
    if m and m.group(2) in _PER_LAYER:
        return f"model.layers.{m.group(1)}.{_PER_LAYER[m.group(2)]}"
    raise GGUFError(f"tensor {gguf_name!r} has no llama equivalent (only plain llama models are supported)")


def permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row order from Hugging Face's (what its converter does when writing)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def unpermute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face's Q/K row order from llama.cpp's (the inverse of `permute`)."""
    return (weights.reshape(n_head, weights.shape[0] // n_head // 2, 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


class BaseModel:
    """A llama GGUF opened for reading: its metadata as a transformers config, its tensors."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from gguf import GGUFReader

        self.path = Path(path)
        if not self.path.is_file():
            raise GGUFError(f"no GGUF file at {str(self.path)!r}")
        try:
            self.reader = GGUFReader(self.path)
        except Exception as exc:  # noqa: BLE001 - anything the reader chokes on is "not a GGUF"
            raise GGUFError(f"{str(self.path)!r} is not a readable GGUF file: {exc}") from None
        self.arch = _field(self.reader, "general.architecture")
        if self.arch != "llama":
            raise GGUFError(f"{self.path.name}: local fine-tuning supports llama-architecture GGUF models; "
                            f"this one is {self.arch!r}")
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.n_head = int(_field(self.reader, "llama.attention.head_count"))
        self.n_head_kv = int(_field(self.reader, "llama.attention.head_count_kv", self.n_head))

    def config(self) -> Any:
        """A `LlamaConfig` with the GGUF's hyperparameters."""
        from transformers import LlamaConfig

        r = self.reader
        emb = self.tensors["token_embd.weight"]
        vocab = int(_field(r, "llama.vocab_size", int(emb.shape[1])))
        hidden = int(_field(r, "llama.embedding_length"))
        rope_dims = _field(r, "llama.rope.dimension_count")
        if rope_dims is not None and int(rope_dims) != hidden // self.n_head:
            raise GGUFError(f"{self.path.name}: partial rotary embeddings are not supported")
        if _field(r, "llama.rope.scaling.type") not in (None, "none"):
            raise GGUFError(f"{self.path.name}: rope scaling is not supported for local fine-tuning")
        return LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=int(_field(r, "llama.feed_forward_length")),
            num_hidden_layers=int(_field(r, "llama.block_count")),
            num_attention_heads=self.n_head,
            num_key_value_heads=self.n_head_kv,
            max_position_embeddings=int(_field(r, "llama.context_length", 2048)),
            rms_norm_eps=float(_field(r, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
            rope_parameters={"rope_type": "default",
                             "rope_theta": float(_field(r, "llama.rope.freq_base", 10000.0))},
            tie_word_embeddings="output.weight" not in self.tensors,
            bos_token_id=_field(r, "tokenizer.ggml.bos_token_id"),
            eos_token_id=_field(r, "tokenizer.ggml.eos_token_id"),
            pad_token_id=_field(r, "tokenizer.ggml.padding_token_id"),
        )

    def heads_of(self, gguf_name: str) -> int | None:
        """How many heads a Q/K tensor is permuted over (None for any other tensor)."""
        if gguf_name.endswith("attn_q.weight"):
            return self.n_head
        if gguf_name.endswith("attn_k.weight"):
            return self.n_head_kv
        return None

    def array(self, gguf_name: str) -> np.ndarray:
        """A tensor dequantized to float32, in Hugging Face layout (Q/K rows un-permuted)."""
        from gguf.quants import dequantize

        t = self.tensors[gguf_name]
        values = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        heads = self.heads_of(gguf_name)
        return unpermute(values, heads) if heads else values

    def state_dict(self) -> dict[str, Any]:
        """Every tensor as a float32 torch tensor under its transformers name."""
        import torch

        return {hf_name(name): torch.from_numpy(self.array(name).copy()) for name in self.tensors}

    def token_text(self, token_id: int) -> str:
        """The text of a token of the vocabulary (e.g. the end-of-turn token ``<|im_end|>``)."""
        field = self.reader.fields["tokenizer.ggml.tokens"]
        return bytes(field.parts[field.data[token_id]]).decode("utf-8")

    @property
    def eos_token_id(self) -> int | None:
        value = _field(self.reader, "tokenizer.ggml.eos_token_id")
        return None if value is None else int(value)


def build_model(config: Any, state: dict[str, Any], *, copy: bool = True) -> Any:
    """A float32 `LlamaForCausalLM` (eval mode) on `state`: on copies of its tensors, or (``copy=False``)
    on the tensors themselves, for a model whose base weights nothing will change (LoRA training)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    missing = [n for n, _ in model.named_parameters() if n not in state and not (
        n == "lm_head.weight" and config.tie_word_embeddings)]
    if missing:
        raise GGUFError(f"no tensor for {', '.join(missing[:5])}")
    model.load_state_dict({k: v.clone() if copy else v for k, v in state.items()}, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    # the rotary inverse frequencies are a buffer computed at construction (on meta): rebuild it
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    model = model.to(torch.float32)
    model.eval()
    return model


def load_llama(path: str | os.PathLike[str]) -> tuple[Any, BaseModel]:
    """The GGUF's model as a float32 `LlamaForCausalLM` (eval mode) and the opened base file."""
    base = BaseModel(path)
    return build_model(base.config(), base.state_dict()), base


def write_gguf(base: BaseModel, weights: dict[str, Any], path: str | os.PathLike[str], *,
               tensor_type: str = "q8_0", metadata: dict[str, str] | None = None,
               reference: dict[str, Any] | None = None, force: bool = False) -> str:
    """Write `weights` (transformers name -> tensor, the merged model's state) as a GGUF at `path`.

    Tensors equal to the base file's dequantized values (`reference`, the `state_dict()` they were
    loaded from, saves dequantizing again) are copied in their original encoding unless `force`; the
    others are encoded as `tensor_type`. `metadata` adds or replaces string keys (``general.name``...).
    Returns the sha256 of the file written.
    """
    import gguf
    from gguf.quants import quantize

    if tensor_type not in OUTPUT_TYPES:
        raise GGUFError(f"tensor_type must be one of {', '.join(OUTPUT_TYPES)}, got {tensor_type!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(tmp, arch=base.arch)
    extra = dict(metadata or {})
    for field in base.reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name in extra:
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub_type)
    for key, value in extra.items():
        writer.add_key_value(key, value, gguf.GGUFValueType.STRING)
    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "f16": gguf.GGMLQuantizationType.F16,
             "f32": gguf.GGMLQuantizationType.F32}[tensor_type]
    for name, t in base.tensors.items():
        new = weights.get(hf_name(name))
        if new is None:
            if hf_name(name) == "lm_head.weight":
                raise GGUFError("the model has an output tensor but no lm_head weight was given")
            raise GGUFError(f"no weight for tensor {name!r} ({hf_name(name)})")
        values = (new.detach().to("cpu").float().numpy() if hasattr(new, "detach")
                  else np.asarray(new, np.float32))
        original = reference[hf_name(name)].numpy() if reference is not None else base.array(name)
        if not force and np.array_equal(values, original):
            writer.add_tensor(name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
            continue
        heads = base.heads_of(name)
        if heads:
            values = permute(values, heads)
        values = np.ascontiguousarray(values, dtype=np.float32)
        row = values.shape[-1]
        if values.ndim == 1 or t.tensor_type == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, values)  # norms stay float32, as llama.cpp expects
        elif qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, values)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, values.astype(np.float16))
        elif row % 32 == 0:
            data = quantize(values, qtype)
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
        else:  # Q8_0 needs rows in blocks of 32
            writer.add_tensor(name, values.astype(np.float16))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    return digest


def sha256_file(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
