"""honing: compile language-model programs.

Write a program out of LM calls (signatures, `Predict`, `ChainOfThought`, your own `Module`s), give it a
metric and a few examples, and an optimizer (a plugin, under `honing.optimizers`) tunes its prompts,
demos or weights to maximise the metric.
"""

from __future__ import annotations

import os
from typing import Any

# llama.cpp's OpenMP threads spin while waiting by default, which makes the embedded model 6-10x slower
# whenever anything else runs on the machine. Must be set before llama_cpp is imported; a user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from honing import metrics
from honing._version import __version__
from honing.data import Example, Prediction
from honing.errors import (
    BudgetExceeded,
    ConfigurationError,
    HoningError,
    InputError,
    LMError,
    LoadError,
    OptimizerError,
    ParseError,
    SignatureError,
    TooManyErrors,
    UnknownOptimizer,
)
from honing.evaluate import Evaluate, EvaluationResult
from honing.modules import ChainOfThought, Module, Predict
from honing.optimizers.base import Optimizer
from honing.plugins.hookspecs import hookimpl
from honing.settings import configure, context
from honing.signatures import InputField, OutputField, Signature
from honing.tracing import trace

__all__ = [
    "Budget", "BudgetExceeded", "ChainOfThought", "ConfigurationError", "Evaluate", "EvaluationResult", "Example",
    "HoningError", "InputError", "InputField", "LM", "LMError", "LoadError", "Module", "Optimizer",
    "OptimizerError", "OutputField", "ParseError", "Predict", "Prediction", "Signature", "SignatureError",
    "TooManyErrors", "UnknownOptimizer", "__version__", "configure", "context", "hookimpl", "metrics", "trace",
]


def __getattr__(name: str) -> Any:
    # The LM client imports litellm, which takes a second or two: load it on first use only.
    if name == "LM":
        from honing.lm.client import LM

        return LM
    if name == "Budget":
        from honing.lm.budget import Budget

        return Budget
    raise AttributeError(f"module 'honing' has no attribute {name!r}")
