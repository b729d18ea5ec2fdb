"""`import_litellm`: litellm, imported once and quietly, for the modules that talk to it.

litellm is slow to import and noisy while it does: this module is the one place that imports it (the
hosted path of `honing.lm.client.LM` and the ``local/...`` litellm provider shim use it), so the rest of
honing, and an ``LM("local/...")`` call, never pays for it.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any

from honing.lm.secrets import install_log_scrubbing

__all__ = ["import_litellm"]

_litellm_lock = threading.Lock()
_litellm_module: Any = None


def import_litellm() -> Any:
    """Import litellm once, quietly: offline cost map, no banner on errors, lazy parts loaded up front.

    Warnings raised while litellm and the pydantic models it defines are imported (deprecations of
    the libraries it uses) are ignored here, filtered by category and by the warning's module, so the
    rest of the process keeps its own warning filters (tests run with ``filterwarnings = error``).
    """
    global _litellm_module
    if _litellm_module is not None:
        return _litellm_module
    with _litellm_lock:
        if _litellm_module is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            with warnings.catch_warnings():
                for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
                    warnings.filterwarnings("ignore", category=category,
                                            module=r"(litellm|pydantic|httpx|openai|aiohttp)(\.|$)")
                # the first ModelResponse makes pydantic finish litellm's deferred `Message` schema, which
                # can warn about a `ReadOnly` TypedDict item: build one now, with that warning ignored
                warnings.filterwarnings("ignore", message=r".*`ReadOnly` qualifier", category=UserWarning)
                import litellm

                litellm.ModelResponse()

                # litellm resolves many attributes lazily; touch the ones honing uses so that their
                # imports (and any warnings from them) happen here, once.
                for name in ("completion", "completion_cost", "cost_per_token", "token_counter",
                             "supports_response_schema", "validate_environment", "provider_list",
                             "AuthenticationError", "custom_provider_map"):
                    getattr(litellm, name, None)
                # its first completion imports provider modules that build pydantic adapters (and warn)
                # at import: run one mocked completion, which sends nothing, so that happens here too
                try:
                    litellm.completion(model="openai/honing-warm-up", mock_response="ok",
                                       messages=[{"role": "user", "content": "warm-up"}])
                except Exception:  # noqa: BLE001 - only a warm-up; a real call reports real errors
                    pass
            litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banner on stdout
            install_log_scrubbing()
            _litellm_module = litellm
    return _litellm_module
