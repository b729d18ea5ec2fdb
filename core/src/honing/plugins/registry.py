"""Registries of what the plugins provide (optimizers, adapters, embedders), each entry with its origin.

A registry is built by calling one registration hook once per plugin, handing each a ``register``
callback bound to that plugin, so every name is known to come from a given distribution and version.
Two registrations of one name are refused, whoever made them: nothing is silently shadowed.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import keyword
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs
import pluggy

from honing._version import __version__
from honing.errors import HoningError, PluginError, UnknownOptimizer, UserError
from honing.plugins.manager import BUILTIN_PLUGIN_NAME, DISABLE_ENV, get_plugin_manager

#: Optimizers the official plugins provide, so a missing one can be met with the right ``pip install``.
OFFICIAL_OPTIMIZERS: Mapping[str, str] = {
    "LabeledFewShot": "honing-labeled",
    "BootstrapFewShot": "honing-bootstrap",
    "BootstrapFewShotWithRandomSearch": "honing-bootstrap",
    "BootstrapFewShotWithOptuna": "honing-bootstrap",
    "Ensemble": "honing-ensemble",
    "SignatureOptimizer": "honing-bayesian",
    "BayesianSignatureOptimizer": "honing-bayesian",
    "KNNFewShot": "honing-knn",
    "BootstrapFinetune": "honing-finetune",
}

#: Names `honing.optimizers` itself provides, which no plugin may register.
RESERVED_OPTIMIZER_NAMES = frozenset({"Optimizer"})


class UnknownEntry(UserError, KeyError):
    """No installed plugin registers an entry (adapter, embedder, ...) of that name."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class _BadRegistration(Exception):
    """Raised by a ``register`` callback; reported as a `PluginError` naming the plugin."""


@attrs.frozen
class Entry:
    """One registered thing: its name, the object, and where it came from.

    `distribution` and `version` are None for a plugin registered by hand (``pm.register(obj)``)
    rather than through an entry point; `plugin_name` is its name in the plugin manager.
    """

    name: str
    obj: Any
    distribution: str | None
    version: str | None
    summary: str
    plugin_name: str | None

    @property
    def origin(self) -> str:
        """``"honing-labeled 0.1.0"``, or ``"-"`` when the distribution is unknown."""
        if self.distribution is None:
            return "-"
        return f"{self.distribution} {self.version}" if self.version else self.distribution

    def describe(self) -> str:
        """The origin for messages: distribution and plugin name."""
        plugin = f"plugin {self.plugin_name!r}" if self.plugin_name else "an unnamed plugin"
        if self.distribution is None:
            return f"{plugin} (no distribution)"
        return f"{self.origin} ({plugin})"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "distribution": self.distribution, "version": self.version,
                "summary": self.summary}


def summary_of(obj: Any) -> str:
    """The one-line summary of a registered object: its ``summary`` string, else its docstring's first line.

    For a class only its own docstring counts, not one inherited from a base class.
    """
    summary = getattr(obj, "summary", None)
    if not isinstance(summary, str):
        summary = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if not isinstance(summary, str):
        return ""
    lines = inspect.cleandoc(summary).strip().splitlines()
    return lines[0].strip() if lines else ""


AddFn = Callable[[str, Any], None]
#: Turns the registry's internal ``add(name, obj)`` into the ``register`` callback a hook receives.
MakeRegister = Callable[[AddFn], Callable[..., None]]


def named_register(add: AddFn) -> Callable[[str, Any], None]:
    """The ``register(name, factory)`` callback of `register_adapters` and `register_embedders`."""

    def register(name: str, factory: Any, /) -> None:
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise _BadRegistration(f"names must be non-empty strings without spaces, got {name!r}")
        if not callable(factory):
            raise _BadRegistration(f"{name!r} was registered with {factory!r}, which is not callable")
        add(name, factory)

    return register


def optimizer_register(add: AddFn) -> Callable[..., None]:
    """The ``register(optimizer_class, *, name=None)`` callback of `register_optimizers`."""

    def register(optimizer_class: type, *, name: str | None = None) -> None:
        if not isinstance(optimizer_class, type):
            raise _BadRegistration(f"register() takes an optimizer class, got {optimizer_class!r}")
        name = optimizer_class.__name__ if name is None else name
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) \
                or name.startswith("_"):
            raise _BadRegistration(f"optimizer names must be public Python identifiers, got {name!r}")
        if name in RESERVED_OPTIMIZER_NAMES:
            raise _BadRegistration(f"the optimizer name {name!r} is reserved by honing")
        add(name, optimizer_class)

    return register


def distribution_installed(name: str) -> bool:
    """Is a distribution of that name installed (for the ``pip install`` hints)?"""
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


class Registry:
    """The entries of one kind ("optimizer", "adapter", ...), by name.

    `known_elsewhere` maps names not installed to the distribution that provides them, for the
    ``pip install`` hint; `disabled` lists the plugin names that were blocked, for the same reason.
    """

    def __init__(self, kind: str, entries: Iterable[Entry] = (), *,
                 error: type[UserError] | None = None, known_elsewhere: Mapping[str, str] | None = None,
                 disabled: Iterable[str] = ()) -> None:
        self.kind = kind
        self._error = error or (UnknownOptimizer if kind == "optimizer" else UnknownEntry)
        self._known_elsewhere = dict(known_elsewhere or {})
        self._disabled = tuple(disabled)
        self._entries: dict[str, Entry] = {}
        for entry in entries:
            previous = self._entries.get(entry.name)
            if previous is not None:
                raise PluginError(self._duplicate_message(previous, entry))
            self._entries[entry.name] = entry

    @classmethod
    def from_hook(cls, pm: pluggy.PluginManager, hook_name: str, *, kind: str,
                  make_register: MakeRegister = named_register, **kwargs: Any) -> Registry:
        """Call hook `hook_name` once per plugin implementing it, recording who registered what.

        Extra keyword arguments go to the constructor (`error`, `known_elsewhere`).
        """
        disabled = [name for name, plugin in pm.list_name_plugin() if plugin is None]
        return cls(kind, _collect(pm, hook_name, make_register), disabled=disabled, **kwargs)

    def get(self, name: str) -> Entry:
        """The entry registered as `name`; raises (`UnknownOptimizer` for optimizers) with a hint if none."""
        entry = self._entries.get(name)
        if entry is None:
            raise self._error(self._unknown_message(name))
        return entry

    def resolve(self, spec: str) -> Entry:
        """`get(spec)`, or else the entry of the longest prefix name (ending in ``/`` or ``:``) of `spec`."""
        entry = self._entries.get(spec)
        if entry is not None:
            return entry
        prefixes = [n for n in self._entries if n[-1] in "/:" and spec.startswith(n) and spec != n]
        if prefixes:
            return self._entries[max(prefixes, key=len)]
        raise self._error(self._unknown_message(spec))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """All entries, sorted by name."""
        return [self._entries[name] for name in self.names()]

    def to_json(self) -> list[dict[str, Any]]:
        """``[{"name", "distribution", "version", "summary"}, ...]`` sorted by name."""
        return [entry.to_json() for entry in self.entries()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<Registry of {len(self)} {self.kind}(s): {', '.join(self.names())}>"

    def _duplicate_message(self, first: Entry, second: Entry) -> str:
        if first.plugin_name == second.plugin_name:
            return f"{first.describe()} registers the {self.kind} {first.name!r} twice"
        blockable = [e.plugin_name for e in (second, first)
                     if e.distribution is not None and e.plugin_name != BUILTIN_PLUGIN_NAME]
        hint = (f"; uninstall one, or disable one with {DISABLE_ENV}={blockable[0]}" if blockable
                else "; uninstall or unregister one of them")
        return (f"the {self.kind} {first.name!r} is registered twice: by {first.describe()} and by "
                f"{second.describe()}{hint}")

    def _unknown_message(self, name: str) -> str:
        message = f"no {self.kind} named {name!r} is installed (installed: {', '.join(self.names()) or 'none'})"
        provider = self._known_elsewhere.get(name)
        if provider is not None:
            return f"{message}; {self._provider_hint(provider)}"
        match = self._close_match(name)
        if match is None:
            return message
        elsewhere = self._known_elsewhere.get(match) if match not in self._entries else None
        also = f" ({self._provider_hint(elsewhere)})" if elsewhere else ""
        return f"{message}; did you mean {match!r}?{also}"

    def _provider_hint(self, distribution: str) -> str:
        if not distribution_installed(distribution):
            return f"it comes with the {distribution} plugin: pip install {distribution}"
        why = (f"plugins disabled ({DISABLE_ENV} or blocked=): {', '.join(self._disabled)}"
               if self._disabled else "it may be an older version: pip install -U " + distribution)
        return f"it comes with {distribution}, which is installed but did not register it; {why}"

    def _close_match(self, name: str) -> str | None:
        candidates = list(dict.fromkeys([*self._entries, *self._known_elsewhere]))
        folded = [c for c in candidates if c.casefold() == name.casefold()]
        if folded:
            return folded[0]
        matches = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        return matches[0] if matches else None


def _plugin_label(pm: pluggy.PluginManager, plugin: object) -> str | None:
    name = pm.get_name(plugin)
    if name is not None and name.isdigit():  # pluggy names anonymous instances by id()
        return f"<{type(plugin).__name__} object>"
    return name


def _collect(pm: pluggy.PluginManager, hook_name: str, make_register: MakeRegister) -> list[Entry]:
    distributions = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    hookimpls = getattr(pm.hook, hook_name).get_hookimpls()
    entries: list[Entry] = []
    for impl in hookimpls:
        if impl.wrapper or impl.hookwrapper:
            continue
        others = [other.plugin for other in hookimpls if other.plugin is not impl.plugin]
        entries.extend(_call_one(pm, hook_name, impl, others, make_register,
                                 distributions.get(id(impl.plugin))))
    return entries


def _call_one(pm: pluggy.PluginManager, hook_name: str, impl: pluggy.HookImpl, others: list[object],
              make_register: MakeRegister, dist: Any) -> list[Entry]:
    """Call `hook_name` on `impl`'s plugin alone, with a ``register`` bound to that plugin."""
    if dist is not None:
        distribution, version = dist.metadata["name"], dist.version
    elif impl.plugin_name == BUILTIN_PLUGIN_NAME:
        distribution, version = "honing", __version__
    else:
        distribution, version = None, None
    label = _plugin_label(pm, impl.plugin)
    where = Entry("", None, distribution, version, "", label).describe()
    found: list[Entry] = []
    is_open = True

    def add(name: str, obj: Any) -> None:
        if not is_open:
            raise PluginError(f"{where} called register() after its {hook_name} hook returned")
        found.append(Entry(name, obj, distribution, version, summary_of(obj), label))

    try:
        pm.subset_hook_caller(hook_name, others)(register=make_register(add))
    except _BadRegistration as exc:
        raise PluginError(f"{where}, in {hook_name}: {exc}") from None
    except HoningError:
        raise
    except Exception as exc:
        raise PluginError(f"{where} failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
    finally:
        is_open = False
    return found


def optimizer_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Every installed optimizer (`register_optimizers`); `get` raises `UnknownOptimizer`."""
    return Registry.from_hook(_pm(pm), "register_optimizers", kind="optimizer",
                              make_register=optimizer_register, known_elsewhere=OFFICIAL_OPTIMIZERS)


def adapter_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Every installed adapter (`register_adapters`); `get` raises `UnknownEntry`."""
    return Registry.from_hook(_pm(pm), "register_adapters", kind="adapter")


def embedder_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Every installed embedder (`register_embedders`); use `resolve` to honour prefixes."""
    return Registry.from_hook(_pm(pm), "register_embedders", kind="embedder")


_origins: tuple[pluggy.PluginManager, dict[type, dict[str, Any]]] | None = None
_origins_lock = threading.Lock()


def optimizer_origin(optimizer_class: type) -> dict[str, Any]:
    """``{"distribution", "version"}`` of the plugin that registers `optimizer_class` ({} for a class no
    plugin registers, e.g. one made in a test). Built once per plugin manager, not once per compile."""
    global _origins
    pm = get_plugin_manager()
    with _origins_lock:
        if _origins is None or _origins[0] is not pm:
            try:
                registry = optimizer_registry(pm)
            except HoningError:  # a broken plugin is reported where optimizers are looked up, not here
                return {}
            _origins = (pm, {e.obj: {"distribution": e.distribution, "version": e.version} for e in registry})
        return dict(_origins[1].get(optimizer_class, {}))


def _pm(pm: pluggy.PluginManager | None) -> pluggy.PluginManager:
    return pm if pm is not None else get_plugin_manager()
