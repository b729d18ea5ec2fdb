"""KNNFewShot on the real embedded model and the real default embedder: nearest-neighbour demos beat
zero-shot on Banking77 (the issue's setting: 10 intents, k=8, 100 training examples).

(No ``from __future__ import annotations`` here: the signature's Literal type is built at run time.)
"""

import json
import typing
from pathlib import Path
from typing import Any

import honing as hn
import pytest
from honing_knn import KNNFewShot

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "banking77" / "sample.jsonl"


def sample_splits(per_intent_train: int, per_intent_dev: int) -> tuple[list[str], list[hn.Example], list[hn.Example]]:
    """The shipped 10-intent sample: the first `per_intent_train` queries of each intent to train on,
    the next `per_intent_dev` to evaluate (dealt round-robin over the intents)."""
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    intents = list(dict.fromkeys(r["intent"] for r in rows))
    by_intent = {i: [hn.Example(text=r["text"], intent=i).with_inputs("text") for r in rows if r["intent"] == i]
                 for i in intents}
    train = [e for i in intents for e in by_intent[i][:per_intent_train]]
    dev = [by_intent[i][per_intent_train + j] for j in range(per_intent_dev) for i in intents]
    return intents, train, dev


@pytest.mark.local_lm
def test_knn_beats_zero_shot_on_banking77(local_lm: Any) -> None:
    intents, train, dev = sample_splits(per_intent_train=10, per_intent_dev=5)
    assert len(train) == 100 and len(dev) == 50 and not {e.text for e in train} & {e.text for e in dev}
    intent_type = typing.Literal[tuple(intents)]  # type: ignore[valid-type]

    class Classify(hn.Signature):
        """Classify the banking customer query into one intent."""

        text: str = hn.InputField()
        intent: intent_type = hn.OutputField()  # type: ignore[valid-type]

    def metric(example: hn.Example, prediction: hn.Prediction, trace: Any = None) -> bool:
        return example.intent == prediction.intent

    evaluate = hn.Evaluate(devset=dev, metric=metric, num_threads=2)
    with hn.context(lm=local_lm):
        zero_shot = evaluate(hn.Predict(Classify))
        knn = KNNFewShot(k=8, trainset=train).compile(hn.Predict(Classify))
        with_knn = evaluate(knn)
    print(f"Banking77-10, 50 dev: zero-shot {zero_shot.score:.2f}, KNNFewShot(k=8, 100 train) {with_knn.score:.2f}")
    assert zero_shot.n_errors == with_knn.n_errors == 0
    assert knn.state.embedder.name == "sentence-transformers/all-MiniLM-L6-v2" and knn.state.dim == 384
    assert with_knn.score >= 0.65, f"KNN {with_knn.score:.2f}, zero-shot {zero_shot.score:.2f}"
    assert with_knn.score >= zero_shot.score + 0.15, f"KNN {with_knn.score:.2f}, zero-shot {zero_shot.score:.2f}"
