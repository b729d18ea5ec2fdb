"""Every installed optimizer, looked up by name: ``from honing.optimizers import LabeledFewShot``.

The core ships no optimizer; each comes from a plugin (``pip install honing-labeled``) and is found
through the plugin registry on first access, so importing this package loads nothing.
`Optimizer`, the base class, comes from `honing.optimizers.base`.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

__all__ = ["Optimizer"]


def _submodule(name: str) -> Any:
    """The submodule `name` of this package if there is one (``from honing.optimizers import base``)."""
    if not name.isidentifier():
        return None
    try:
        spec = importlib.util.find_spec(f"{__name__}.{name}")
    except (ImportError, ValueError):
        return None
    return importlib.import_module(spec.name) if spec is not None else None


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name == "Optimizer":
        from honing.optimizers.base import Optimizer

        globals()["Optimizer"] = Optimizer
        return Optimizer
    module = _submodule(name)
    if module is not None:
        return module
    from honing.plugins.registry import optimizer_registry

    return optimizer_registry().get(name).obj


def __dir__() -> list[str]:
    from honing.plugins.registry import optimizer_registry

    names = {n for n in globals() if n.startswith("__")}
    names.update(n for n, v in globals().items()
                 if isinstance(v, ModuleType) and v.__name__.startswith(f"{__name__}."))
    return sorted({*names, "Optimizer", *optimizer_registry().names()})
