"""Helpers shared by honing-bootstrap's tests: a fake LM that learns from demos and counts requests,
small programs with one and two predictors, and a held-out devset for the contract's intents."""

from __future__ import annotations

from typing import Any

import honing as hn
from honing.errors import BudgetExceeded
from honing.testing.contract import ContractClassify
from honing.testing.fake import FakeLM, nearest_demo_responder

DEV = [
    ("my card has not arrived yet", "card_arrival"),
    ("when does the new card arrive", "card_arrival"),
    ("what is the exchange rate today", "exchange_rate"),
    ("exchange rate for pounds", "exchange_rate"),
    ("my pin got blocked", "pin_blocked"),
    ("pin is blocked after wrong tries", "pin_blocked"),
]


def devset() -> list[hn.Example]:
    return [hn.Example(text=t, intent=i).with_inputs("text") for t, i in DEV]


def fake_lm(*, scoring: bool = False, **kwargs: Any) -> FakeLM:
    """A fake that answers like the nearest demo. Without choice scoring by default: one request per
    prediction, so call counts are exact (calibrated scoring adds one content-free request per new demo
    prefix, memoised per LM object by the transcript adapter)."""
    return FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=scoring, **kwargs)


def contract_lm() -> FakeLM:
    """The contract's fake without choice scoring: the transcript adapter memoises calibration scores
    per LM object in memory, so with scoring the second of two identical compiles makes fewer calls and
    the records (which count calls) differ. Generation has no such memo."""
    return fake_lm()


class Twice(hn.Module):
    """Two classifiers of the same signature (for per-predictor behaviour)."""

    def __init__(self) -> None:
        self.first = hn.Predict(ContractClassify)
        self.second = hn.Predict(ContractClassify)

    def forward(self, text: str) -> hn.Prediction:
        self.first(text=text)
        return self.second(text=text)


class OnlyFirst(hn.Module):
    def __init__(self) -> None:
        self.first = hn.Predict(ContractClassify)

    def forward(self, text: str) -> hn.Prediction:
        return self.first(text=text)


class Topic(hn.Signature):
    """Name the topic of the text."""

    text: str = hn.InputField()
    topic: str = hn.OutputField()


class TopicThenIntent(hn.Module):
    """A predictor ("topic") whose output no training example has, then the classifier."""

    def __init__(self) -> None:
        self.topic = hn.Predict(Topic)
        self.classify = hn.Predict(ContractClassify)

    def forward(self, text: str) -> hn.Prediction:
        self.topic(text=text)
        return self.classify(text=text)


class BudgetAfter:
    """Wraps a responder: the (n+1)-th request raises BudgetExceeded, like a Budget that ran out."""

    def __init__(self, n: int, responder: Any = None) -> None:
        self.n = n
        self.calls = 0
        self.responder = responder or nearest_demo_responder("Text", "Intent")

    def __call__(self, request: Any) -> Any:
        self.calls += 1
        if self.calls > self.n:
            raise BudgetExceeded(f"budget: max_calls={self.n} reached", limit="calls")
        return self.responder(request)


class InterruptAfter(BudgetAfter):
    """The (n+1)-th request raises KeyboardInterrupt (a compile killed part-way)."""

    def __call__(self, request: Any) -> Any:
        self.calls += 1
        if self.calls > self.n:
            raise KeyboardInterrupt
        return self.responder(request)
