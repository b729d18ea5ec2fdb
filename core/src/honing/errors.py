"""Every error honing raises on purpose, in one place so users can catch them by kind.

Each message names what is wrong and where (field, example index, file, JSON path), because the person
reading it is usually looking at a long run that just stopped.
"""

from __future__ import annotations

from typing import Any


class HoningError(Exception):
    """Base class of every error honing raises on purpose."""


class UserError(HoningError):
    """Bad input from the user: the CLI prints these as one line and exits 2."""


class SignatureError(UserError, ValueError):
    """A signature that cannot be built (unknown type name, duplicate field, bad string form)."""


class InputError(UserError, ValueError):
    """A call or an example whose fields do not fit the signature."""


class ConfigurationError(UserError):
    """Something needed is not configured: no LM, an unknown provider, a missing API key."""


class MetricError(UserError, TypeError, ValueError):
    """A metric that returns something other than a bool or a number in [0, 1]."""


class ParseError(HoningError, ValueError):
    """The LM's reply could not be turned into the signature's typed outputs."""

    def __init__(self, message: str, *, field: str | None = None, expected: str | None = None,
                 raw: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.expected = expected
        self.raw = raw


class LMError(HoningError):
    """An LM call failed after its retries. The message never contains an API key."""

    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable


class BudgetExceeded(HoningError):
    """A call would pass a budget limit, so it was not sent. `spent` is the usage so far."""

    def __init__(self, message: str, *, spent: Any = None, limit: str | None = None) -> None:
        super().__init__(message)
        self.spent = spent
        self.limit = limit


class TooManyErrors(HoningError):
    """A run reached its `max_errors`. `partial` holds what had finished, so nothing is lost."""

    def __init__(self, message: str, *, partial: Any = None) -> None:
        super().__init__(message)
        self.partial = partial


class LoadError(UserError):
    """A saved file that cannot be loaded: malformed, truncated, or saved from another program.

    `path` is the JSON path of the offending value (``$.predictors[0].demos[3]``) when known.
    """

    def __init__(self, message: str, *, path: str | None = None, file: str | None = None) -> None:
        where = " @ ".join(p for p in (file, path) if p)
        super().__init__(f"{message} ({where})" if where else message)
        self.path = path
        self.file = file


class UnknownOptimizer(UserError, ImportError):
    """No installed plugin registers an optimizer of that name.

    An ImportError, so ``from honing.optimizers import Nme`` shows this message (the import machinery
    would replace an AttributeError with a generic one)."""


class PluginError(HoningError):
    """A plugin misbehaved: a duplicate name, a registration of the wrong kind."""


class OptimizerError(UserError, ValueError):
    """An optimizer was given inputs it cannot work with (empty trainset, wrong shape, bad metric)."""
