"""Built-in metrics: `(example, prediction, trace=None) -> bool | float`.

Both compare the example's labels with the prediction's fields of the same names (the fields they
share), after normalising text: case, surrounding whitespace and punctuation, articles.
"""

from __future__ import annotations

import enum
import re
import string
from collections import Counter
from typing import Any

from honing.data import Example, Prediction


def normalize(value: Any) -> str:
    """Lowercase, drop punctuation and English articles, collapse whitespace."""
    if isinstance(value, enum.Enum):
        value = value.value
    text = str(value).lower()
    text = "".join(ch for ch in text if ch not in string.punctuation or ch == "_")
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _pairs(example: Example, prediction: Prediction) -> list[tuple[Any, Any]]:
    labels = example.labels() if example.input_keys is not None else example
    shared = [k for k in labels if k in prediction and not k.startswith("_")]
    if not shared:
        raise ValueError(f"the prediction has none of the example's label fields ({', '.join(labels)}); "
                         f"prediction fields: {', '.join(prediction)}")
    return [(labels[k], prediction[k]) for k in shared]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(gold: Any, pred: Any) -> bool:
    """Numbers compare as numbers (normalising drops the point: "3.5" and "35" would both be "35"),
    lists item by item, everything else as normalised text."""
    gold = gold.value if isinstance(gold, enum.Enum) else gold
    pred = pred.value if isinstance(pred, enum.Enum) else pred
    if _is_number(gold) and _is_number(pred):
        return gold == pred
    if _is_number(gold) or _is_number(pred):  # a number and a text such as "8.0": compare as numbers
        try:
            return float(str(gold).strip()) == float(str(pred).strip())
        except ValueError:
            return False
    if isinstance(gold, (list, tuple)) and isinstance(pred, (list, tuple)):
        return len(gold) == len(pred) and all(_same(g, p) for g, p in zip(gold, pred))
    return normalize(gold) == normalize(pred)


def exact_match(example: Example, prediction: Prediction, trace: Any = None) -> bool:
    """True when every label equals the prediction's field of the same name (normalised)."""
    return all(_same(gold, pred) for gold, pred in _pairs(example, prediction))


def f1(example: Example, prediction: Prediction, trace: Any = None) -> float:
    """Token-level F1 between labels and prediction fields, averaged over the shared fields."""
    scores = []
    for gold, pred in _pairs(example, prediction):
        if _is_number(gold) and _is_number(pred):
            scores.append(float(gold == pred))
            continue
        gold_tokens, pred_tokens = normalize(gold).split(), normalize(pred).split()
        common = Counter(gold_tokens) & Counter(pred_tokens)
        overlap = sum(common.values())
        if not gold_tokens or not pred_tokens:
            scores.append(float(gold_tokens == pred_tokens))
        elif overlap == 0:
            scores.append(0.0)
        else:
            precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
            scores.append(2 * precision * recall / (precision + recall))
    return sum(scores) / len(scores)


BUILTIN = {"exact_match": exact_match, "f1": f1}
