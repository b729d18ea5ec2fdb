"""The hyperparameters of `BayesianSignatureOptimizer`, declared once, and its `auto` presets; also
`ScoringSettings`, the keyword-only ones both optimizers of this package share.

Its own module because several places read them: the optimizers, which resolve one compile (presets,
the plan, the study), and `trial_search.TrialSearch`, which runs the trials.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
from honing.plugin_api import InvalidSetting, count, lm_or_none, number, setting

#: auto preset → (candidates per predictor, largest valset).
AUTO_PRESETS: dict[str, tuple[int, int]] = {"light": (6, 100), "medium": (12, 300), "heavy": (18, 1000)}
DEFAULT_NUM_CANDIDATES = 10


def preset_trials(num_candidates: int, predictors: int, zero_shot: bool) -> int:
    """Trials of a preset: enough for TPE to see every candidate of every parameter a few times."""
    k = predictors if zero_shot else 2 * predictors
    return int(max(2 * k * math.log2(max(num_candidates, 2)), 1.5 * num_candidates))


@attrs.frozen
class ScoringSettings:
    """How candidates are scored and compared (keyword-only, shared by both optimizers here)."""

    confidence_z: float = setting(1.0, check=number(), kw_only=True)
    num_threads: int | None = setting(None, check=count(minimum=1, optional=True), run_neutral=True,
                                      kw_only=True)
    max_errors: int | None = setting(None, check=count(optional=True), kw_only=True)
    display_progress: bool = setting(False, run_neutral=True, kw_only=True)

    def __attrs_post_init__(self) -> None:
        # recorded as the float it is used as (a study made with z=1 is one made with 1.0)
        object.__setattr__(self, "confidence_z", float(self.confidence_z))


def _auto(settings: Any, attribute: attrs.Attribute[Any], auto: Any) -> None:
    """A preset, or None with `num_trials` set by hand; a preset leaves trials and candidates to itself."""
    if auto is not None and auto not in AUTO_PRESETS:
        raise InvalidSetting(f"{attribute.name} must be one of {', '.join(map(repr, AUTO_PRESETS))} or None, "
                             f"got {auto!r}")
    num_trials, num_candidates = settings.num_trials, settings.num_candidates
    if auto is not None and num_trials is not None:
        raise InvalidSetting(f"num_trials={num_trials} and auto={auto!r} are both set; the preset chooses "
                             "the number of trials. Pass auto=None to set num_trials yourself")
    if auto is not None and num_candidates != DEFAULT_NUM_CANDIDATES:
        raise InvalidSetting(f"num_candidates={num_candidates} and auto={auto!r} are both set; the preset "
                             f"chooses {AUTO_PRESETS[auto][0]} candidates. Pass auto=None to set them")
    if auto is None and num_trials is None:
        raise InvalidSetting("auto=None needs num_trials (and num_candidates), e.g. "
                             "BayesianSignatureOptimizer(metric, auto=None, num_candidates=6, num_trials=10)")


def _text_or_none(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidSetting(f"{attribute.name} must be a string or None, got {type(value).__name__}")


@attrs.frozen
class BayesianSettings(ScoringSettings):
    """
    :param metric: ``metric(example, prediction, trace=None) -> bool | float`` (scores in [0, 1]).
    :param prompt_model: the LM that summarizes the data and proposes instructions; None: the
        configured LM at compile time.
    :param task_model: the LM the program runs on while bootstrapping and scoring (predictors with an
        LM of their own keep it); None: the configured LM at compile time.
    :param num_candidates: instructions (the original included) and demo sets (the student's own
        included) per predictor; only with ``auto=None``.
    :param num_trials: TPE trials (minibatch trials when minibatching); only with ``auto=None``.
    :param auto: "light", "medium" or "heavy" set the candidates, trials and valset size (at most
        100, 300, 1000 examples, sampled with the seed); None: `num_candidates` and `num_trials`.
    :param max_bootstrapped_demos: bootstrapped demos per set (shuffled sets draw 1 … this).
    :param max_labeled_demos: demos per set in all: labelled examples fill what bootstrapping left.
    :param minibatch: score trials on `minibatch_size` examples and only the promising
        configurations on the whole valset (every `minibatch_full_eval_steps` trials).
    :param storage: an Optuna storage URL, e.g. ``postgresql://user:pass@host/db``, shared by every
        worker; None: SQLite in the run directory, or memory without one. Recorded without its password.
    :param study_name: the study's name in `storage` (workers with the same one run one study);
        None: derived from the parameters and the data.
    :param seed: seeds every random choice (demo sets, tips, valset sample, minibatches, sampler).
    :param init_temperature: the prompt model's sampling temperature for proposals.
    :param confidence_z: how clearly a configuration must beat the student on the full valset to be
        returned instead of it: its net gain, in examples, must reach `confidence_z` standard
        deviations of the per-example differences (a paired sign test; 1.0 is about 84% one-sided).
        0: the best full-valset score wins.
    :param num_threads: examples scored at once (hosted LMs); None: ``hn.configure(num_threads=...)``.
    :param max_errors: failed examples tolerated per bootstrap pass and per evaluation.
    :param display_progress: a progress bar over each evaluation's examples.

    `storage` and `study_name` given to ``compile`` replace these for that compile.
    """

    metric: Any = setting(None)
    prompt_model: Any = setting(None, check=lm_or_none)
    task_model: Any = setting(None, check=lm_or_none)
    num_candidates: int = setting(DEFAULT_NUM_CANDIDATES, check=count(minimum=1))
    num_trials: int | None = setting(None, check=count(minimum=1, optional=True))
    auto: str | None = setting("light", check=_auto)
    max_bootstrapped_demos: int = setting(4, check=count())
    max_labeled_demos: int = setting(4, check=count())
    minibatch: bool = setting(True)
    minibatch_size: int = setting(35, check=count(minimum=1))
    minibatch_full_eval_steps: int = setting(5, check=count(minimum=1))
    storage: str | None = setting(None, check=_text_or_none, run_neutral=True)
    study_name: str | None = setting(None, check=_text_or_none, run_neutral=True)
    seed: int = setting(0)
    init_temperature: float = setting(1.0, check=number(), kw_only=True)

    def __attrs_post_init__(self) -> None:
        # recorded as the types they are used as (a study made with temperature 1 is one made with 1.0)
        super().__attrs_post_init__()
        object.__setattr__(self, "minibatch", bool(self.minibatch))
        object.__setattr__(self, "init_temperature", float(self.init_temperature))

    @property
    def zero_shot(self) -> bool:
        """No demos at all: only the student's own demo set."""
        return self.max_bootstrapped_demos == 0 and self.max_labeled_demos == 0
