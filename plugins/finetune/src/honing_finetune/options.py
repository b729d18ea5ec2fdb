"""`train_kwargs`: what each training backend accepts, defaults, and checks with clear errors.

`check_train_kwargs` is the converter of BootstrapFinetune's `train_kwargs` setting, so a bad key or value
is refused when the optimizer is built (its constructor prefixes "BootstrapFinetune: "); `resolve` fills
in one job's defaults at compile time, once the backend is known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from honing.plugin_api import InvalidSetting, OptimizerError

#: LoRA on the embedded model: every key, with its default. ``None`` means "decided at run time"
#: (`max_steps`: epochs decide; `seed`: the optimizer's seed).
LOCAL_DEFAULTS: dict[str, Any] = {
    "epochs": 3,
    "learning_rate": 1e-3,
    "optimizer": "adamw",
    "batch_size": 8,
    "gradient_accumulation_steps": 1,
    "lora_rank": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "target_modules": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "weight_decay": 0.0,
    "warmup_ratio": 0.1,
    "max_steps": None,
    "max_length": 2048,
    "tensor_type": "q8_0",
    "seed": None,
}

#: Hosted jobs through litellm's fine-tuning API. `epochs`, `batch_size` and `learning_rate_multiplier`
#: are the provider's hyperparameters (``"auto"`` lets it choose); `suffix` names the model; `timeout` and
#: `poll_interval` (seconds) bound the wait.
HOSTED_DEFAULTS: dict[str, Any] = {
    "epochs": "auto",
    "batch_size": "auto",
    "learning_rate_multiplier": "auto",
    "suffix": "honing",
    "seed": None,
    "timeout": 24 * 3600.0,
    "poll_interval": 20.0,
}

#: Hosted settings that say how to wait for a job, not what it trains.
WAITING = ("timeout", "poll_interval")
OPTIMIZERS = ("adamw", "adam", "sgd")
ALL_KEYS = frozenset(LOCAL_DEFAULTS) | frozenset(HOSTED_DEFAULTS)


def _positive_int(key: str, value: Any, *, allow_auto: bool = False, allow_none: bool = False) -> None:
    if allow_auto and value == "auto" or allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        extra = " or 'auto'" if allow_auto else ""
        raise InvalidSetting(f"train_kwargs[{key!r}] must be a positive integer{extra}, got {value!r}")


def _positive_number(key: str, value: Any, *, allow_auto: bool = False, zero: bool = False) -> None:
    if allow_auto and value == "auto":
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
        value >= 0 if zero else value > 0)
    if not ok:
        what = "a number >= 0" if zero else "a number > 0"
        raise InvalidSetting(f"train_kwargs[{key!r}] must be {what}, got {value!r}")


def check_train_kwargs(train_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """`train_kwargs` as a dict (None as {}, `target_modules` as a tuple); unknown keys (named) and bad
    values are refused with `InvalidSetting`, before anything is spent."""
    if train_kwargs is None:
        return {}
    if not isinstance(train_kwargs, Mapping):
        raise InvalidSetting(f"train_kwargs must be a dict, got {type(train_kwargs).__name__}")
    kwargs = dict(train_kwargs)
    unknown = sorted(k for k in kwargs if k not in ALL_KEYS)
    if unknown:
        raise InvalidSetting(f"unknown train_kwargs {', '.join(map(repr, unknown))}; local training takes "
                             f"{', '.join(LOCAL_DEFAULTS)}; hosted jobs take {', '.join(HOSTED_DEFAULTS)}")
    for key, value in kwargs.items():
        if key == "learning_rate":
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                    or value <= 0):
                raise InvalidSetting(f"the learning rate must be a number > 0, got {value!r}")
        elif key in ("epochs", "batch_size"):
            _positive_int(key, value, allow_auto=True)
        elif key in ("gradient_accumulation_steps", "lora_rank", "max_length"):
            _positive_int(key, value)
        elif key == "max_steps":
            _positive_int(key, value, allow_none=True)
        elif key in ("lora_alpha", "timeout", "poll_interval"):
            _positive_number(key, value)
        elif key == "learning_rate_multiplier":
            _positive_number(key, value, allow_auto=True)
        elif key in ("lora_dropout", "weight_decay", "warmup_ratio"):
            _positive_number(key, value, zero=True)
            if key != "weight_decay" and value >= 1:
                raise InvalidSetting(f"train_kwargs[{key!r}] must be below 1, got {value!r}")
        elif key == "optimizer":
            if value not in OPTIMIZERS:
                raise InvalidSetting(f"train_kwargs['optimizer'] must be one of {', '.join(OPTIMIZERS)}, "
                                     f"got {value!r}")
        elif key == "tensor_type":
            from honing_finetune.gguf_io import OUTPUT_TYPES

            if value not in OUTPUT_TYPES:
                raise InvalidSetting(f"train_kwargs['tensor_type'] must be one of {', '.join(OUTPUT_TYPES)}, "
                                     f"got {value!r}")
        elif key == "target_modules":
            if isinstance(value, str) or not value or not all(isinstance(m, str) for m in value):
                raise InvalidSetting("train_kwargs['target_modules'] must be a list of module names such as "
                                     f"['q_proj', 'v_proj'], got {value!r}")
            kwargs[key] = tuple(value)
        elif key == "seed":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidSetting(f"train_kwargs['seed'] must be an integer, got {value!r}")
        elif key == "suffix" and not isinstance(value, str):
            raise InvalidSetting(f"train_kwargs['suffix'] must be a string, got {value!r}")
    return kwargs


def resolve(train_kwargs: Mapping[str, Any], backend: str, target: str, seed: Any) -> dict[str, Any]:
    """The full settings of one training job: defaults, then `train_kwargs`; keys that belong to the
    other backend only are an error naming them."""
    defaults = LOCAL_DEFAULTS if backend == "local" else HOSTED_DEFAULTS
    foreign = sorted(k for k in train_kwargs if k not in defaults)
    if foreign:
        hint = " (hosted jobs take learning_rate_multiplier)" if "learning_rate" in foreign else ""
        raise OptimizerError(f"BootstrapFinetune: train_kwargs {', '.join(map(repr, foreign))} do not apply "
                             f"to {backend} training of {target!r}{hint}; it takes {', '.join(defaults)}")
    settings = {**defaults, **train_kwargs}
    if settings.get("seed") is None:
        settings["seed"] = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
    if backend == "local":
        for key in ("epochs", "batch_size"):
            if settings[key] == "auto":
                settings[key] = LOCAL_DEFAULTS[key]
    return settings
