"""Everything an optimizer plugin may use from honing, and nothing else.

A plugin imports ``honing`` (its public names: `Module`, `Predict`, `Example`, `Prediction`, `Evaluate`,
`hookimpl`, the errors, ...) and this module; nothing under ``honing.*`` besides. First-party plugins hold
to that like a third party (a test walks their imports), so the core can move its internals without
breaking a plugin. Names here only ever gain: removing or changing one is a breaking change.

Groups:

- **the contract**: `Optimizer`, `CompileRun`, `OptimizerRecord`, `hookimpl`;
- **settings** (hyperparameters declared once): `setting` and its checks, `InvalidSetting`;
- **demos**: labelled samples, bootstraps from a teacher's traces, their assembly and logging;
- **candidate search**: `CandidateEvaluator`, `SearchState`, program state, paired comparisons;
- **runs and data**: `RunLog`, `json_safe`, `structure_state` for a plugin's saved extra state;
- **LMs and the embedded model**: `LM`, usage tracking, `get_engine`/`resolve_model_path` for plugins that
  train local weights, `import_litellm` for plugins that call provider APIs litellm wraps;
- **lookups**: adapters and embedders by name; **study storage** URLs.
"""

from __future__ import annotations

from honing import settings, tracing
from honing.adapters import Adapter, TranscriptAdapter
from honing.adapters.base import type_hint
from honing.adapters.parsing import closed_values, render_value
from honing.data import Example, Prediction
from honing.embedders import CachedEmbedder
from honing.errors import (
    BudgetExceeded,
    ConfigurationError,
    InputError,
    LoadError,
    OptimizerError,
    TooManyErrors,
    UserError,
)
from honing.evaluate import Evaluate, EvaluationResult, metric_score
from honing.jsontext import json_safe
from honing.lm.cache import default_cache_dir
from honing.lm.client import LM, import_litellm, known_providers
from honing.lm.local import get_engine, local_model_name, models_dir, resolve_model_path
from honing.lm.secrets import safe_url, scrub
from honing.lm.types import Usage
from honing.lm.usage import track_usage
from honing.metrics import normalize
from honing.modules import ChainOfThought, Module, Predict, call_demos, named_calls, program_inputs
from honing.optimizers.base import Optimizer, check_examples, check_same_shape
from honing.optimizers.kit.checks import (
    InvalidSetting,
    count,
    effective_max_errors,
    fraction,
    integer,
    lm_or_none,
    metric_callable,
    number,
    one_of,
    optional_number,
    resolve_lm,
    setting,
    known_settings,
    to_dict,
)
from honing.optimizers.kit.demos import (
    Bootstrap,
    BuiltDemos,
    DemoCount,
    Demos,
    assemble,
    bootstrap_demos,
    build_demos,
    demo_count,
    labeled_demos,
    make_teacher,
    predictor_rng,
    sample_labeled,
    shortfall_note,
)
from honing.optimizers.kit.fit import DemoFit, fit_demos
from honing.optimizers.kit.search import (
    CandidateEvaluator,
    CandidateResult,
    SearchState,
    apply_state,
    clear_gain,
    gain_text,
    more_demos,
    program_state,
    progress,
)
from honing.optimizers.kit.storage import with_driver
from honing.optimizers.run import CompileRun
from honing.plugins.hookspecs import hookimpl
from honing.plugins.lookup import resolve_adapter, resolve_embedder
from honing.plugins.registry import UnknownEntry, adapter_registry
from honing.record import OptimizerRecord
from honing.runs import RunLog, read_events
from honing.serialization import read_document, structure_state
from honing.signatures import Signature

__all__ = [
    # the contract
    "CompileRun", "Optimizer", "OptimizerRecord", "check_examples", "check_same_shape", "hookimpl",
    # settings
    "InvalidSetting", "count", "effective_max_errors", "fraction", "integer", "lm_or_none", "metric_callable", "number",
    "one_of", "optional_number", "resolve_lm", "setting", "known_settings", "to_dict",
    # programs and data
    "Adapter", "ChainOfThought", "Evaluate", "EvaluationResult", "Example", "Module", "Predict", "Prediction",
    "Signature", "TranscriptAdapter", "call_demos", "closed_values", "metric_score", "named_calls", "normalize",
    "program_inputs", "render_value", "settings", "tracing", "type_hint",
    # demos
    "Bootstrap", "BuiltDemos", "DemoCount", "DemoFit", "Demos", "fit_demos", "assemble", "bootstrap_demos", "build_demos", "demo_count",
    "labeled_demos", "make_teacher", "predictor_rng", "sample_labeled", "shortfall_note",
    # candidate search
    "CandidateEvaluator", "CandidateResult", "SearchState", "apply_state", "clear_gain", "gain_text",
    "more_demos", "program_state", "progress",
    # runs, files and JSON
    "LoadError", "RunLog", "json_safe", "read_document", "read_events", "structure_state",
    # LMs and the embedded model
    "LM", "Usage", "default_cache_dir", "get_engine", "import_litellm", "known_providers", "local_model_name",
    "models_dir", "resolve_model_path", "safe_url", "scrub", "track_usage",
    # lookups and storage
    "CachedEmbedder", "UnknownEntry", "adapter_registry", "resolve_adapter", "resolve_embedder", "with_driver",
    # errors
    "BudgetExceeded", "ConfigurationError", "InputError", "OptimizerError", "TooManyErrors", "UserError",
]
