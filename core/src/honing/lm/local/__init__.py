"""The embedded local LM: a GGUF model run in-process by llama.cpp.

- `models`: which GGUF file a name means (`resolve_model_path`, `local_model_name`, `models_dir`,
  `BUILTIN_MODELS`).
- `engine`: `LocalEngine`, the llama.cpp context of one model file (decoding, grammars, choice scoring,
  KV-cache reuse), and `get_engine`, the process's one engine per file.
- `backend`: `LocalBackend`, what ``LM("local/...")`` calls: ``LMRequest -> Completion`` on the engine,
  without litellm.
- `provider`: the litellm custom provider ``local`` for people who call ``litellm.completion("local/...")``
  themselves (`register_local_provider`, `litellm_kwargs`, `completion_extras`, `complete_local`).

Environment: ``HONING_LOCAL_N_CTX``, ``HONING_LOCAL_N_THREADS`` (see `engine`), ``HONING_MODELS_DIR``
(see `models`).
"""

from __future__ import annotations

from honing.lm.local.engine import DEFAULT_MAX_TOKENS, LocalEngine, get_engine
from honing.lm.local.models import BUILTIN_MODELS, local_model_name, models_dir, resolve_model_path
from honing.lm.local.provider import (
    complete_local,
    completion_extras,
    litellm_kwargs,
    register_local_provider,
)

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MAX_TOKENS",
    "LocalEngine",
    "complete_local",
    "completion_extras",
    "get_engine",
    "litellm_kwargs",
    "local_model_name",
    "models_dir",
    "register_local_provider",
    "resolve_model_path",
]
