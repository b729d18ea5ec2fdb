"""The plugin manager: the core's built-ins plus every installed ``honing`` entry point.

`get_plugin_manager()` builds one per process on first use (never at import time) and keeps it.
Set ``HONING_DISABLE_PLUGINS=labeled,bootstrap`` (entry-point names, comma-separated) to keep
installed plugins from loading, e.g. one that fails to import or clashes with another.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
from collections.abc import Iterable

import pluggy

from honing.errors import PluginError
from honing.plugins import builtins as core_builtins
from honing.plugins import hookspecs

#: Environment variable holding entry-point names not to load, comma-separated.
DISABLE_ENV = "HONING_DISABLE_PLUGINS"
#: Entry-point group plugins publish under.
ENTRYPOINT_GROUP = hookspecs.PROJECT_NAME
#: Name the core's built-ins are registered under. They cannot be disabled.
BUILTIN_PLUGIN_NAME = "honing.builtins"


class InvalidPlugin(PluginError, pluggy.PluginValidationError):
    """A plugin implements a hook that does not exist (often a misspelling) or with wrong parameters.

    Catchable both as honing's `PluginError` and as pluggy's `PluginValidationError`.
    """


def disabled_plugin_names(blocked: Iterable[str] | None = None) -> list[str]:
    """The entry-point names not to load: ``HONING_DISABLE_PLUGINS`` plus `blocked`, deduplicated."""
    names = [n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",")]
    names.extend(blocked or ())
    return [n for n in dict.fromkeys(names) if n and n != BUILTIN_PLUGIN_NAME]


def make_plugin_manager(*, load_entrypoints: bool = True,
                        blocked: Iterable[str] | None = None) -> pluggy.PluginManager:
    """A new plugin manager with the hookspecs, the core's built-ins and (unless told not to) the plugins.

    `blocked` adds entry-point names to those of ``HONING_DISABLE_PLUGINS``. Raises `InvalidPlugin`
    if a loaded plugin implements an unknown hook, and `PluginError` if one fails to import.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(core_builtins, name=BUILTIN_PLUGIN_NAME)
    for name in disabled_plugin_names(blocked):
        pm.set_blocked(name)
    if load_entrypoints:
        try:
            pm.load_setuptools_entrypoints(ENTRYPOINT_GROUP)
        except pluggy.PluginValidationError as exc:
            raise _invalid(pm, exc) from exc
        except Exception as exc:
            raise _load_failed(pm, exc) from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise _invalid(pm, exc) from exc
    return pm


def _describe(pm: pluggy.PluginManager, plugin: object) -> str:
    name = pm.get_name(plugin)
    for p, dist in pm.list_plugin_distinfo():
        if p is plugin:
            return f"plugin {name!r} from {dist.metadata['name']} {dist.version}"
    return f"plugin {name!r}" if name else f"plugin {plugin!r}"


def _invalid(pm: pluggy.PluginManager, exc: pluggy.PluginValidationError) -> InvalidPlugin:
    name = pm.get_name(exc.plugin)
    hint = f"; to skip it, set {DISABLE_ENV}={name}" if name and name != BUILTIN_PLUGIN_NAME else ""
    return InvalidPlugin(exc.plugin, f"{_describe(pm, exc.plugin)} is invalid: {exc}{hint}")


def _load_failed(pm: pluggy.PluginManager, exc: Exception) -> PluginError:
    # load_setuptools_entrypoints loads in distribution order and stops at the failure, so the
    # culprit is the first entry point of the group that is neither loaded nor blocked.
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRYPOINT_GROUP and not pm.has_plugin(ep.name) and not pm.is_blocked(ep.name):
                return PluginError(
                    f"the honing plugin {ep.name!r} ({ep.value}) from {dist.metadata['name']} "
                    f"{dist.version} failed to load: {type(exc).__name__}: {exc}; "
                    f"to skip it, set {DISABLE_ENV}={ep.name}"
                )
    return PluginError(f"loading the honing plugins failed: {type(exc).__name__}: {exc}")


_lock = threading.Lock()
_local = threading.local()
_pm: pluggy.PluginManager | None = None


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first call (thread-safe) and kept afterwards."""
    pm = _pm
    if pm is not None:
        return pm
    if getattr(_local, "building", False):
        raise PluginError(
            "a plugin asked for the plugin manager while being loaded (e.g. `from honing.optimizers "
            "import X` at module level); import the class from its own package instead"
        )
    return _build()


def _build() -> pluggy.PluginManager:
    global _pm
    with _lock:
        if _pm is None:
            _local.building = True
            try:
                _pm = make_plugin_manager()
            finally:
                _local.building = False
        return _pm


def reset_plugin_manager(pm: pluggy.PluginManager | None = None) -> pluggy.PluginManager | None:
    """Drop the process-wide manager (the next use rebuilds it), or install `pm` in its place.

    Returns the previous one, so a test can put it back.
    """
    global _pm
    with _lock:
        previous, _pm = _pm, pm
    return previous
