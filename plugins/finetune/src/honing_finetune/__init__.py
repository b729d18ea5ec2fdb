"""honing-finetune: BootstrapFinetune, where honing trains weights.

LoRA on the CPU for the embedded local model (read from and written back to GGUF, served by llama.cpp
as ``local/<name>``), or a hosted fine-tuning job through litellm. See `honing_finetune.optimizer`.
"""

from __future__ import annotations

from typing import Any

import honing

from honing_finetune.compact_adapter import CompactTranscriptAdapter
from honing_finetune.optimizer import BootstrapFinetune

__all__ = ["BootstrapFinetune", "CompactTranscriptAdapter"]


@honing.hookimpl
def register_optimizers(register: Any) -> None:
    register(BootstrapFinetune)


@honing.hookimpl
def register_adapters(register: Any) -> None:
    register("transcript_compact", CompactTranscriptAdapter)
