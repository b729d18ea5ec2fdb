"""How many labelled demos fit each predictor's prompt: candidates sized by what the model's context holds.

For a small model the number of demos inline matters more than which ones, and a fixed cap (16, 32) leaves
accuracy on the table when a whole trainset would fit, or overflows a small context. `fit_demos` measures
instead: for each predictor it renders the prompt its adapter would send with the k longest usable demos
and the longest training query, counts it with the model's tokenizer (litellm's estimate for hosted models,
said so in the note), and keeps the largest k that leaves `reserve_tokens` for the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from honing import settings
from honing.adapters.parsing import render_value
from honing.data import Example
from honing.modules import Module, Predict
from honing.optimizers.kit.demos import labeled_demos
from honing.plugins.lookup import resolve_adapter

#: Tokens left free after the prompt: the answer (a label, a number, a short text) and a margin.
RESERVE_TOKENS = 256


@attrs.frozen
class DemoFit:
    """Per predictor: how many labelled demos fit (`counts`) out of how many are usable (`usable`)."""

    counts: dict[str, int]
    usable: dict[str, int]
    #: the context window of each predictor's LM (None: unknown, so every usable demo counts as fitting)
    windows: dict[str, int | None]
    #: predictors whose prompts were counted with an estimate rather than the model's own tokenizer
    estimated: tuple[str, ...] = ()

    def notes(self) -> list[str]:
        """What the user should know: demos left out for lack of room, an unknown or estimated count."""
        out = []
        for name, fits in self.counts.items():
            usable, window = self.usable[name], self.windows[name]
            how = " (counted with litellm's estimate: the model's tokenizer is unknown)" \
                if name in self.estimated else ""
            if window is None:
                out.append(f"predictor {name!r}: the LM's context size is unknown; all {usable} usable training "
                           "examples are offered as demos")
            elif fits == 0 and usable:
                out.append(f"predictor {name!r}: not even one demo fits the {window}-token context with room for "
                           f"the query and its answer{how}; only demo-free candidates are built")
            elif fits < usable:
                out.append(f"predictor {name!r}: {fits} of {usable} usable training examples fit the "
                           f"{window}-token context as demos{how}; candidates use at most {fits}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "usable": dict(self.usable), "windows": dict(self.windows),
                "estimated": list(self.estimated)}


def fit_demos(program: Module, trainset: Sequence[Example], *, reserve_tokens: int = RESERVE_TOKENS) -> DemoFit:
    """How many of each predictor's usable training examples fit its prompt as demos (see the module doc).

    The LM is the predictor's own or the configured one; an LM that does not say its context size (or
    cannot count tokens) gets every usable demo.
    """
    counts, usable, windows, estimated = {}, {}, {}, []
    current = settings.current()
    for name, predictor in program.named_predictors():
        demos = labeled_demos(predictor, trainset)
        usable[name] = len(demos)
        lm = predictor.lm or current.lm
        window = getattr(lm, "context_window", None)
        count_tokens = getattr(lm, "count_tokens", None)
        if not isinstance(window, int) or window <= 0 or not callable(count_tokens):
            counts[name], windows[name] = len(demos), None
            continue
        windows[name] = window
        if not getattr(lm, "exact_token_counts", False):
            estimated.append(name)
        counts[name] = _largest_fitting(predictor, demos, trainset, lm, window - reserve_tokens)
    return DemoFit(counts, usable, windows, tuple(estimated))


def _largest_fitting(predictor: Predict, demos: list[dict[str, Any]], trainset: Sequence[Example], lm: Any,
                     budget: int) -> int:
    """The largest k whose prompt (the k longest demos, the longest query) has at most `budget` tokens."""
    signature = predictor.signature
    adapter = resolve_adapter(predictor.adapter or settings.current().adapter, lm)
    longest_first = sorted(demos, key=lambda d: -len(_rendered(d)))
    inputs = [f.name for f in signature.input_fields]
    queries = [{n: e[n] for n in inputs} for e in trainset if all(n in e for n in inputs)]
    query = max(queries, key=lambda q: len(_rendered(q)), default={n: "" for n in inputs})

    def fits(k: int) -> bool:
        request = adapter.format(signature, longest_first[:k], query)
        return lm.count_tokens(request) <= budget

    if not fits(0):
        return 0
    low, high = 0, len(longest_first)  # fits(low) holds; find the largest
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _rendered(values: dict[str, Any]) -> str:
    return " ".join(render_value(v) for k, v in values.items() if not str(k).startswith("_"))
