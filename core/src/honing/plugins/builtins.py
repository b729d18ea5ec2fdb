"""The core's own registrations, loaded as a plugin like any other (distribution ``honing``).

The core ships no optimizers (each lives in its own ``honing-<family>`` plugin); it registers the
built-in adapters and the litellm embedders (one name prefix per embedding provider, see
`honing.embedders`). The built-ins may import the concrete modules; those never import the plugin
machinery back (names are resolved by `honing.plugins.lookup`).
"""

from __future__ import annotations

from honing.adapters import builtin_adapters
from honing.embedders import builtin_embedders
from honing.plugins.hookspecs import RegisterNamed, hookimpl


@hookimpl
def register_adapters(register: RegisterNamed) -> None:
    for name, factory in builtin_adapters().items():
        register(name, factory)


@hookimpl
def register_embedders(register: RegisterNamed) -> None:
    for name, factory in builtin_embedders().items():
        register(name, factory)
