"""The transcript adapter without the list of allowed values, for a model fine-tuned on its labels."""

from __future__ import annotations

from honing.plugin_api import TranscriptAdapter


class CompactTranscriptAdapter(TranscriptAdapter):
    """The transcript adapter without the header line listing a closed field's allowed values.

    A model fine-tuned on its label set does not need the list (choice scoring still admits only those
    values), so its prompts are shorter: ``BootstrapFinetune(adapter="transcript_compact")``.
    """

    name = "transcript_compact"

    def __init__(self) -> None:
        super().__init__(list_choices=False)
