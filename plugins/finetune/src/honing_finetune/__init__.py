"""honing-finetune: BootstrapFinetune, where honing trains weights.

LoRA on the CPU for the embedded local model (read from and written back to GGUF, served by llama.cpp
as ``local/<name>``), or a hosted fine-tuning job through litellm. See `honing_finetune.optimizer`.
"""

from __future__ import annotations

from typing import Any

import honing
from honing.adapters import TranscriptAdapter

from honing_finetune.optimizer import BootstrapFinetune

__all__ = ["BootstrapFinetune", "CompactTranscriptAdapter"]


class CompactTranscriptAdapter(TranscriptAdapter):
    """The transcript adapter without the header line listing a closed field's allowed values.

    A model fine-tuned on its label set does not need the list (choice scoring still admits only those
    values), so its prompts are shorter: ``BootstrapFinetune(adapter="transcript_compact")``.
    """

    name = "transcript_compact"

    def __init__(self) -> None:
        super().__init__(list_choices=False)


@honing.hookimpl
def register_optimizers(register: Any) -> None:
    register(BootstrapFinetune)


@honing.hookimpl
def register_adapters(register: Any) -> None:
    register("transcript_compact", CompactTranscriptAdapter)
