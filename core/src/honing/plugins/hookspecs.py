"""The hooks a honing plugin may implement, and the markers to implement them with.

A plugin is a module (or any object) with functions marked ``@hookimpl`` whose names are hooks below,
published under the entry-point group ``honing``::

    # pyproject.toml of honing-labeled
    [project.entry-points.honing]
    labeled = "honing_labeled.plugin"

    # honing_labeled/plugin.py
    from honing import hookimpl

    @hookimpl
    def register_optimizers(register):
        register(LabeledFewShot)

A hookimpl may take fewer parameters than its spec (pluggy passes only the ones it names), so these
specs only ever gain parameters: never remove or rename one, or every plugin using it breaks.
A misspelt hook name (``register_optimizer``) is refused when the plugin is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pluggy

PROJECT_NAME = "honing"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class RegisterOptimizer(Protocol):
    def __call__(self, optimizer_class: type, *, name: str | None = None) -> None: ...


class RegisterNamed(Protocol):
    def __call__(self, name: str, factory: Callable[..., Any], /) -> None: ...


@hookspec
def register_optimizers(register: RegisterOptimizer) -> None:
    """Register the optimizer classes this plugin provides.

    :param register: call ``register(optimizer_class, *, name=None)`` once per optimizer.
        ``name`` (a Python identifier) defaults to the class's ``__name__``; it is how users find it,
        as ``honing.optimizers.<name>`` and on the command line. The one-line summary shown by
        ``honing plugins`` is the class's ``summary`` attribute if it is a string, else the first
        line of its own docstring. Registering a name another plugin already registered is an error.
    """


@hookspec
def register_adapters(register: RegisterNamed) -> None:
    """Register adapters (how a signature becomes LM messages and how replies are parsed).

    :param register: call ``register(name, adapter_factory)`` once per adapter. ``name`` is what
        users pass as ``context(adapter="name")``; ``adapter_factory`` is a callable (usually the
        adapter class) that returns an adapter when called with no arguments.
    """


@hookspec
def register_embedders(register: RegisterNamed) -> None:
    """Register embedders (text to vector), used by retrieval-based optimizers such as KNNFewShot.

    :param register: call ``register(name_or_prefix, factory)`` once per embedder. A name ending in
        ``/`` or ``:`` is a prefix: ``"openai/"`` serves every ``"openai/<model>"``. ``factory`` is
        called with the full name the user asked for and returns the embedder.
    """
