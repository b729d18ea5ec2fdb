"""The trained LoRA adapter, kept in the run directory as safetensors the moment training ends.

Merging it and writing the GGUF can still fail afterwards (a full disk, a model llama.cpp refuses), and
training is the expensive part: with the adapter on disk, compiling again with ``resume=True`` loads it
and only merges and writes. The file is safetensors (tensors only, no pickle); ``adapter.json`` beside it
says what it was trained from (base file, data digest, settings) and holds the loss curve, so an adapter
is only reused for exactly the same training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_INFO = "adapter.json"


def save_adapter(model: Any, directory: Path, key: dict[str, Any], result: dict[str, Any]) -> Path:
    """Write the LoRA weights of `model` (a peft model) and what they came from; returns the file."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().contiguous() for name, t in get_peft_model_state_dict(model).items()}
    path = directory / ADAPTER_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "created_by": "honing-finetune"})
    os.replace(tmp, path)
    (directory / ADAPTER_INFO).write_text(json.dumps({"key": key, "result": result}, indent=2) + "\n",
                                          encoding="utf-8")
    return path


def load_adapter(model: Any, directory: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """Load the adapter saved in `directory` into `model` when it was trained for `key`; returns its
    training result (loss curve, steps), or None when there is none or it was trained otherwise."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path, info = directory / ADAPTER_FILE, directory / ADAPTER_INFO
    if not path.is_file() or not info.is_file():
        return None
    try:
        saved = json.loads(info.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if saved.get("key") != key:
        return None
    set_peft_model_state_dict(model, load_file(str(path)))
    return dict(saved["result"])
