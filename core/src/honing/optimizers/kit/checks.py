"""Hyperparameters declared once: `setting()` fields with the checks every optimizer shares.

An optimizer's settings are one frozen attrs class (see `honing.optimizers.base.Optimizer`); its fields
use these validators and converters, so a bad value is refused when the optimizer is built, with a
message naming the optimizer and the parameter (``BootstrapFewShot: max_rounds must be an integer >= 1,
got 0``). Validators decide; the one converter only turns None into {} for dict settings.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from honing import settings
from honing.errors import OptimizerError

#: Field metadata keys: a run-neutral parameter changes how a run is shown or scheduled, not what it
#: computes (a resumed run may change it); an unrecorded one is left out of the compiled program's record.
META_RUN_NEUTRAL = "honing_run_neutral"
META_RECORDED = "honing_recorded"

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


class InvalidSetting(ValueError):
    """A hyperparameter with a bad value; the optimizer's constructor prefixes its own name."""


def setting(default: Any = attrs.NOTHING, *, check: Validator | list[Validator] | None = None,
            converter: Callable[[Any], Any] | None = None, run_neutral: bool = False, recorded: bool = True,
            kw_only: bool = False, factory: Callable[[], Any] | None = None) -> Any:
    """One hyperparameter of an optimizer's settings class.

    :param check: validator(s), e.g. ``count(minimum=1)``.
    :param run_neutral: changing it does not change what a run computes (threads, progress bars, where
        a study is stored), so a resumed run may use another value.
    :param recorded: False keeps it out of the record written into the compiled program.
    """
    metadata = {META_RUN_NEUTRAL: run_neutral, META_RECORDED: recorded}
    if factory is not None:
        return attrs.field(factory=factory, validator=check, converter=converter, kw_only=kw_only,
                           metadata=metadata)
    return attrs.field(default=default, validator=check, converter=converter, kw_only=kw_only,
                       metadata=metadata)


def is_run_neutral(field: attrs.Attribute[Any]) -> bool:
    return bool(field.metadata.get(META_RUN_NEUTRAL, False))


def is_recorded(field: attrs.Attribute[Any]) -> bool:
    return bool(field.metadata.get(META_RECORDED, True))


# ----------------------------------------------------------------------------------------------------
# validators (attrs signature: instance, attribute, value)

def count(*, minimum: int = 0, optional: bool = False, wording: str | None = None) -> Validator:
    """An integer >= `minimum` (None too when `optional`). Booleans are not counts. `wording` names the
    rule in the message (default ``"an integer >= <minimum>"``, e.g. ``"a positive integer"``)."""
    rule = wording or f"an integer >= {minimum}"

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InvalidSetting(f"{attribute.name} must be {rule}{' or None' if optional else ''}, got {value!r}")

    return check


def integer(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Any integer (a seed); booleans are not."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSetting(f"{attribute.name} must be an integer, got {value!r}")


def number(*, minimum: float = 0.0) -> Validator:
    """A real number >= `minimum`."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < minimum:
            raise InvalidSetting(f"{attribute.name} must be a number >= {minimum}, got {value!r}")

    return check


def fraction(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """None, or a score in [0, 1]. Scores are fractions everywhere in honing, never percentages."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        hint = f" (did you mean {value / 100:g}?)" if isinstance(value, numbers.Real) and 1 < value <= 100 else ""
        raise InvalidSetting(f"{attribute.name} is a score fraction in [0, 1], got {value!r}{hint}")


def optional_number(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """None, or any real number (a metric threshold: 0 is a real threshold)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise InvalidSetting(f"{attribute.name} must be a number or None, got {value!r}")


def one_of(*allowed: Any) -> Validator:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in allowed:
            raise InvalidSetting(f"{attribute.name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")

    return check


def lm_or_none(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise InvalidSetting(f"{attribute.name} must be an LM (e.g. hn.LM('openai/gpt-4o-mini')) or None, "
                             f"got {type(value).__name__}")


def metric_callable(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise InvalidSetting(f"{attribute.name} must be callable (example, prediction, trace=None) -> bool | float, "
                             f"got {type(value).__name__}")


def known_settings(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Settings for teacher runs: a dict whose keys are `hn.configure` settings."""
    if not isinstance(value, Mapping):
        raise InvalidSetting(f"{attribute.name} must be a dict of settings, e.g. "
                             f"{{'lm': hn.LM('openai/gpt-4o-mini')}}, got {type(value).__name__}")
    unknown = sorted(set(value) - set(settings.SETTING_NAMES))
    if unknown:
        raise InvalidSetting(f"unknown {attribute.name} {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(settings.SETTING_NAMES)}")


# ----------------------------------------------------------------------------------------------------
# converters (normalise only; the validators decide, and see the value as given)

def to_dict(value: Any) -> Any:
    """None as {}, a mapping as a plain dict; anything else unchanged for the validator to judge."""
    if value is None:
        return {}
    return dict(value) if isinstance(value, Mapping) else value


# ----------------------------------------------------------------------------------------------------
# what a compile resolves from the configured settings (looked up at compile time, not construction)

def effective_max_errors(max_errors: int | None) -> int | None:
    """The optimizer's `max_errors`, else the configured default (`hn.configure(max_errors=...)`)."""
    return max_errors if max_errors is not None else settings.current().max_errors


def resolve_lm(owner: str, name: str, value: Any) -> Any:
    """The given LM, else the configured one; a clear error naming the parameter when there is neither."""
    lm = value if value is not None else settings.current().lm
    if lm is None:
        raise OptimizerError(f"{owner}: no {name} and no configured LM: pass {name}=hn.LM(...) or call "
                             "hn.configure(lm=hn.LM('local/smollm2-135m'))")
    return lm
