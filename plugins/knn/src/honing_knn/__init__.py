"""honing-knn: KNNFewShot, the per-call nearest-neighbour demos optimizer, and the sentence-transformers
embedder (``sentence-transformers/<model>``, and ``default``: the packaged all-MiniLM-L6-v2).

Importing this package is cheap: numpy, FAISS, torch and sentence-transformers load on first use.
"""

from __future__ import annotations

from typing import Any

import honing

from honing_knn.optimizer import KNNFewShot
from honing_knn.program import KNNProgram
from honing_knn.state import Neighbour

__all__ = ["KNNFewShot", "KNNProgram", "Neighbour", "register_embedders", "register_optimizers"]


@honing.hookimpl
def register_optimizers(register: Any) -> None:
    register(KNNFewShot)


@honing.hookimpl
def register_embedders(register: Any) -> None:
    from honing_knn.embedders import PREFIX, sentence_transformer_factory

    register(PREFIX, sentence_transformer_factory)
    register("default", sentence_transformer_factory)
