"""Names to objects: the adapter and the embedder a user names, found through the plugin registries.

The concrete adapters and embedders know nothing of plugins; this module is the one place that turns
``adapter="json"`` or ``"openai/text-embedding-3-small"`` into an object, so the arrows point one way:
programs -> lookup -> registry -> plugin manager -> the core's built-ins -> the concrete classes.
"""

from __future__ import annotations

import threading
from typing import Any

from honing.adapters import Adapter, default_adapter_name
from honing.embedders import DEFAULT_EMBEDDER, OFFICIAL_EMBEDDERS, CallableEmbedder, Embedder
from honing.plugins.manager import DISABLE_ENV
from honing.plugins import registry
from honing.plugins.registry import UnknownEntry, adapter_registry, embedder_registry

_adapters: dict[str, Adapter] = {}
_adapters_lock = threading.Lock()


def resolve_adapter(spec: Any, lm: Any) -> Adapter:
    """An Adapter instance from an instance, a registered name, or None (the LM's default).

    One instance per name per process: adapters hold no per-call state.
    """
    if isinstance(spec, Adapter):
        return spec
    name = spec if isinstance(spec, str) else default_adapter_name(lm)
    adapter = _adapters.get(name)
    if adapter is None:
        factory = adapter_registry().get(name).obj
        with _adapters_lock:
            adapter = _adapters.setdefault(name, factory())
    return adapter


def resolve_embedder(spec: Any = None, *, pm: Any = None, **options: Any) -> Any:
    """An embedder from a name (through the registry), a callable, or an embedder object.

    None means `DEFAULT_EMBEDDER`. `options` (e.g. ``api_base=``, ``api_key=``) go to the factory of a
    named embedder. An unknown name raises `UnknownEntry` naming what is installed and, for names an
    official plugin provides, the ``pip install`` that brings it.
    """
    if spec is None:
        spec = DEFAULT_EMBEDDER
    if isinstance(spec, str):
        registry = embedder_registry(pm)
        try:
            entry = registry.resolve(spec)
        except UnknownEntry as exc:
            raise UnknownEntry(_unknown_embedder(spec, str(exc), "litellm/" in registry)) from None
        return entry.obj(spec, **options)
    if options:
        raise TypeError(f"options {sorted(options)} apply only to embedders given by name")
    if isinstance(spec, Embedder):
        return spec
    if callable(spec):
        return CallableEmbedder(spec)
    raise TypeError(f"an embedder is a name, a callable list[str] -> array, or an object with name and "
                    f"embed(); got {type(spec).__name__}")


def _unknown_embedder(spec: str, message: str, litellm_prefix: bool) -> str:
    for name, distribution in OFFICIAL_EMBEDDERS.items():
        if spec == name or (name[-1] in "/:" and spec.startswith(name)):
            if not registry.distribution_installed(distribution):
                return f"the embedder {spec!r} comes with the {distribution} plugin: pip install {distribution}"
            return (f"{message}; the embedder {spec!r} comes with {distribution}, which is installed but "
                    f"did not register it (is the plugin disabled with {DISABLE_ENV}?)")
    if "/" in spec and litellm_prefix:
        return f"{message}; for any other litellm embedding model use 'litellm/{spec}'"
    return message
