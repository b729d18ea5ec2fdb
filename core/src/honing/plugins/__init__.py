"""honing's plugin system: pluggy hooks found through the entry-point group ``honing``.

Plugins implement the hooks of `honing.plugins.hookspecs` with ``@hookimpl``; the registries built
from them say what is installed and which distribution provided it. Importing this package loads
no plugin: the manager is built on first use.
"""

from honing.plugins.hookspecs import hookimpl, hookspec
from honing.plugins.manager import (
    DISABLE_ENV,
    InvalidPlugin,
    get_plugin_manager,
    make_plugin_manager,
    reset_plugin_manager,
)
from honing.plugins.registry import (
    OFFICIAL_OPTIMIZERS,
    Entry,
    Registry,
    UnknownEntry,
    adapter_registry,
    embedder_registry,
    optimizer_registry,
)

__all__ = [
    "DISABLE_ENV",
    "OFFICIAL_OPTIMIZERS",
    "Entry",
    "InvalidPlugin",
    "Registry",
    "UnknownEntry",
    "adapter_registry",
    "embedder_registry",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "make_plugin_manager",
    "optimizer_registry",
    "reset_plugin_manager",
]
