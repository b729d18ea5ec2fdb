"""Process defaults (`configure`) and scoped overrides (`context`), carried by contextvars.

`context(...)` changes settings for the code inside the `with` block only, and for the worker threads
that honing itself starts from there (`submit_in_context` / `map_in_threads`), because those run in a
copy of the caller's context. Two threads with different contexts never see each other's LM.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import attrs

T = TypeVar("T")
R = TypeVar("R")

_UNSET: Any = object()

#: The settings a user may set. `lm`: the default LM. `adapter`: an Adapter instance or a registered
#: adapter name ("transcript", "chat", "json"); None lets the LM pick. `budget`: a Budget every call in
#: scope is charged to. `num_threads` and `max_errors`: defaults for Evaluate and optimizers.
#: `sampling`: {"temperature": t, "rollout": r} applied to every generation in scope (optimizers use it
#: to ask for a fresh sample of a request already made). `usage_trackers`, `trace_stack`: internal.
SETTING_NAMES = ("lm", "adapter", "budget", "num_threads", "max_errors", "sampling", "usage_trackers",
                 "trace_stack", "callbacks")


@attrs.frozen
class Settings:
    lm: Any = None
    adapter: Any = None
    budget: Any = None
    num_threads: int = 1
    max_errors: int | None = None
    sampling: dict[str, Any] | None = None
    usage_trackers: tuple[Any, ...] = ()
    trace_stack: tuple[Any, ...] = ()
    callbacks: tuple[Any, ...] = ()


_global_settings = Settings()
_global_lock = threading.Lock()
_context_settings: contextvars.ContextVar[Settings | None] = contextvars.ContextVar(
    "honing_settings", default=None
)


def current() -> Settings:
    """The settings in force here: the innermost `context`, else the process defaults."""
    scoped = _context_settings.get()
    return scoped if scoped is not None else _global_settings


def _check_names(overrides: dict[str, Any]) -> None:
    unknown = sorted(set(overrides) - set(SETTING_NAMES))
    if unknown:
        raise TypeError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTING_NAMES)}")


def configure(**settings: Any) -> None:
    """Set process-wide defaults, e.g. ``configure(lm=LM("local/smollm2-135m"))``."""
    global _global_settings
    _check_names(settings)
    with _global_lock:
        _global_settings = attrs.evolve(_global_settings, **settings)


@contextlib.contextmanager
def context(**overrides: Any) -> Iterator[Settings]:
    """Override settings inside a `with` block (and in the threads honing starts from it)."""
    _check_names(overrides)
    token = _context_settings.set(attrs.evolve(current(), **overrides))
    try:
        yield current()
    finally:
        _context_settings.reset(token)


@contextlib.contextmanager
def _pushed(name: str, item: Any) -> Iterator[None]:
    """Append `item` to a tuple-valued setting for the duration of a block."""
    settings = current()
    token = _context_settings.set(attrs.evolve(settings, **{name: (*getattr(settings, name), item)}))
    try:
        yield
    finally:
        _context_settings.reset(token)


def submit_in_context(executor: ThreadPoolExecutor, fn: Callable[..., R], *args: Any) -> Future[R]:
    """Submit `fn` to `executor` so it runs in a copy of the caller's context (settings follow)."""
    ctx = contextvars.copy_context()
    return executor.submit(ctx.run, fn, *args)


def map_in_threads(fn: Callable[[T], R], items: Iterable[T], num_threads: int) -> Iterator[Future[R]]:
    """Run `fn` over `items` on `num_threads` threads, each call in the caller's context.

    Yields the futures in submission order; with one thread everything runs on the calling thread.
    """
    items = list(items)
    if num_threads <= 1:
        for item in items:
            future: Future[R] = Future()
            try:
                future.set_result(fn(item))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                future.set_exception(exc)
            yield future
        return
    with ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="honing") as pool:
        futures = [submit_in_context(pool, fn, item) for item in items]
        try:
            yield from futures
        except BaseException:
            for f in futures:
                f.cancel()
            raise
