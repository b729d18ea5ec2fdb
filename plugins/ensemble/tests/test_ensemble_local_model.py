"""Ensemble on the real embedded model (SmolLM2-135M), on the shipped Banking77 sample.

Marked `local_lm`. Three members that differ only in their labelled demos are scored on twelve
validation queries (36 calls); choosing the members and scoring the ensemble are served by those calls.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import honing as hn
import pytest
from honing.datafiles import load_examples
from honing_ensemble import Ensemble, EnsembleProgram

pytestmark = pytest.mark.local_lm

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "banking77" / "sample.jsonl"
Intent = typing.Literal["card_arrival", "lost_or_stolen_card", "top_up_failed",
                        "balance_not_updated_after_bank_transfer"]
INTENTS = typing.get_args(Intent)


class Classify(hn.Signature):
    """Classify the banking customer query into one intent."""

    text: str = hn.InputField()
    intent: Intent = hn.OutputField()


def accuracy(example: hn.Example, prediction: hn.Prediction, trace: Any = None) -> bool:
    return example.intent == prediction.intent


def test_the_ensemble_is_at_least_its_best_member_and_choosing_costs_no_call(local_lm, tmp_path):
    rows = [e for e in load_examples(SAMPLE, inputs=["text"]) if e.intent in INTENTS]
    by_intent = {i: [e for e in rows if e.intent == i] for i in INTENTS}
    demos = [{"text": e.text, "intent": e.intent} for k in range(8) for i in INTENTS for e in [by_intent[i][k]]]
    valset = [by_intent[i][k] for k in range(8, 11) for i in INTENTS]
    members = []
    for n_demos in (0, 8, 32):  # zero-shot, two demos per intent, all eight per intent
        member = hn.Predict(Classify)
        member.demos = demos[:n_demos]
        members.append(member)

    with hn.context(lm=local_lm):
        ensemble = Ensemble(metric=accuracy).compile(members, valset=valset)
    record = ensemble.compile_record
    member_scores = [record.scores[f"member_{i}"] for i in range(3)]
    assert round(record.score, 6) >= max(member_scores), (record.score, member_scores, record.notes)  # scores: 6 places
    kept = [len(m.demos) for m in ensemble.members]
    assert kept and set(kept) <= {0, 8, 32}
    whole = next(c for c in record.candidates if c["key"] == "ensemble")
    assert whole["calls"] == 0 and whole["cache_hits"] == len(kept) * len(valset)  # its members' calls, cached

    path = tmp_path / "ensemble.json"
    ensemble.save(path)
    again = EnsembleProgram.like(path, lambda: hn.Predict(Classify))
    with hn.context(lm=local_lm):
        assert [again(text=e.text).intent for e in valset[:4]] == [ensemble(text=e.text).intent for e in valset[:4]]
