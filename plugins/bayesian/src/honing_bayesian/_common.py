"""Small pieces both optimizers share: parameter checks, the LMs to use, the selection set, the run log."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

import honing
from honing import settings
from honing.data import Example
from honing.errors import OptimizerError
from honing.runs import RunLog

#: Parameters that change how a run is shown or scheduled, or where it is stored, not what it
#: computes: a resumed run (or another worker) may use other values.
RUN_NEUTRAL = frozenset({"num_threads", "display_progress", "storage", "study_name"})


def check_count(owner: str, name: str, value: Any, *, minimum: int = 0, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptimizerError(f"{owner}: {name} must be an integer >= {minimum}"
                             f"{' or None' if optional else ''}, got {value!r}")
    return value


def check_number(owner: str, name: str, value: Any, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < minimum:
        raise OptimizerError(f"{owner}: {name} must be a number >= {minimum}, got {value!r}")
    return float(value)


def check_lm(owner: str, name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise OptimizerError(f"{owner}: {name} must be an LM (e.g. hn.LM('openai/gpt-4o-mini')) or None, "
                             f"got {type(value).__name__}")
    return value


def resolve_lm(owner: str, name: str, value: Any) -> Any:
    """The given LM, else the configured one (looked up at compile time, not construction time)."""
    lm = value if value is not None else settings.current().lm
    if lm is None:
        raise OptimizerError(f"{owner}: no {name} and no configured LM: pass {name}=hn.LM(...) or call "
                             "hn.configure(lm=hn.LM('local/smollm2-135m'))")
    return lm


def selection_set(optimizer: honing.Optimizer, trainset: list[Example], valset: list[Example] | None) -> list[Example]:
    """The valset; without one the trainset, with a note that the selection is then optimistic."""
    if valset is not None:
        return valset
    optimizer.note("no valset: candidates are scored on the trainset (which also supplies demos and the data "
                   "summary), so the scores are optimistic; pass valset= for an honest selection")
    return trainset


def reject_unknown(owner: str, kwargs: Mapping[str, Any]) -> None:
    if kwargs:
        raise TypeError(f"{owner}.compile() got unexpected keyword argument(s): {', '.join(sorted(kwargs))}")


def comparable_parameters(optimizer: honing.Optimizer) -> dict[str, Any]:
    """The parameters that decide what a run computes (compared when a run or a study is continued)."""
    return jsonable({k: v for k, v in optimizer.record_parameters().items() if k not in RUN_NEUTRAL})


def open_run_log(optimizer: honing.Optimizer, run_dir: Any, resume: bool) -> RunLog | None:
    """The run's event log in `run_dir` (None without one); a resume must use the same parameters."""
    if run_dir is None:
        if resume:
            raise OptimizerError(f"{optimizer.name}.compile: resume=True needs run_dir= (the run to continue)")
        return None
    return RunLog(run_dir, optimizer=optimizer.name, parameters=comparable_parameters(optimizer), resume=resume)


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def lm_name(lm: Any) -> str:
    return str(getattr(lm, "model", None) or type(lm).__name__)


def clear_gain(candidate: Any, reference: Any, z: float) -> bool:
    """Whether per-example scores `candidate` beat `reference` (same examples, same order) clearly: the net
    gain must be positive and at least `z` standard deviations of the paired differences (for 0/1 scores:
    wins - losses >= z * sqrt(wins + losses), a one-sided sign test; z=1 is about 84%). z=0: any gain.
    Without per-example scores (e.g. an old log), the means are compared."""
    candidate, reference = list(candidate or ()), list(reference or ())
    if not candidate or len(candidate) != len(reference):
        return bool(candidate) and bool(reference) and sum(candidate) / len(candidate) > sum(reference) / len(reference)
    differences = [c - r for c, r in zip(candidate, reference, strict=True)]
    total = sum(differences)
    return total > 0 and total >= z * math.sqrt(sum(d * d for d in differences))


def gain_text(candidate: Any, reference: Any) -> str:
    """``net +3 of 11 changed examples``: how a paired comparison came out, for notes."""
    candidate, reference = list(candidate or ()), list(reference or ())
    if not candidate or len(candidate) != len(reference):
        return "no per-example scores"
    differences = [c - r for c, r in zip(candidate, reference, strict=True)]
    changed = sum(1 for d in differences if d)
    return f"net {sum(differences):+g} over {changed} changed example{'s' if changed != 1 else ''}"
