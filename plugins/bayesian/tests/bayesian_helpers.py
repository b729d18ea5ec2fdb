"""Helpers of honing-bayesian's tests: scripted LMs whose task accuracy depends on the instruction."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import honing as hn
from honing.lm.types import LMRequest
from honing.testing.contract import ContractClassify, contract_examples
from honing.testing.fake import FakeLM, nearest_demo_responder, transcript_blocks

#: The instruction that makes the scripted task model right: it names the key words.
GOOD = "Classify the query by its key words: card arrival, exchange rate or pin blocked."
KEYWORDS = {"card": "card_arrival", "arriv": "card_arrival", "exchange": "exchange_rate", "rate": "exchange_rate",
            "pin": "pin_blocked", "unblock": "pin_blocked"}


def keyword_intent(text: str) -> str:
    lowered = text.lower()
    for word, intent in KEYWORDS.items():
        if word in lowered:
            return intent
    return "unknown"


def is_proposal(request: LMRequest) -> bool:
    return request.text().rstrip().endswith("Proposed Instruction:")


def is_data_summary(request: LMRequest) -> bool:
    return request.text().rstrip().endswith(("Observations:", "Summary:"))


class ScriptedLM(FakeLM):
    """A prompt model and task model in one.

    Proposal requests get `proposals` in order (the last one repeats); data-summary requests get a
    sentence. A task request is answered right (by key word) when the instruction — the prompt's first
    line — contains "key words", else like the nearest demo (so demos help a little), else "unknown".
    """

    def __init__(self, proposals: Sequence[str] = (GOOD,), *, scoring: bool = False) -> None:
        self.proposals = list(proposals)
        self.proposal_requests: list[LMRequest] = []
        super().__init__(responder=self._respond, scoring=scoring)
        self._demo = nearest_demo_responder("Text", "Intent")

    def _respond(self, request: LMRequest) -> Any:
        if is_proposal(request):
            self.proposal_requests.append(request)
            index = min(len(self.proposal_requests) - 1, len(self.proposals) - 1)
            return self.proposals[index]
        if is_data_summary(request):
            return "The queries are short banking questions about cards, exchange rates and pins."
        text = request.text()
        instruction = text.split("\n", 1)[0]
        if "key words" in instruction:
            query = transcript_blocks(text)[-1].get("Text", "")
            answer = keyword_intent(query)
            if request.choices:
                return {c: (0.0 if c.strip() == answer else -5.0) for c in request.choices}
            return answer
        return self._demo(request)

    @property
    def task_requests(self) -> list[LMRequest]:
        return [r for r in self.requests if not is_proposal(r) and not is_data_summary(r)]


class Twice(hn.Module):
    """Two classifiers of the same signature; the second one decides."""

    def __init__(self) -> None:
        self.first = hn.Predict(ContractClassify)
        self.second = hn.Predict(ContractClassify)

    def forward(self, text: str) -> hn.Prediction:
        self.first(text=text)
        return self.second(text=text)


def devset() -> list[hn.Example]:
    rows = [("my card has not arrived yet", "card_arrival"), ("what is the exchange rate today", "exchange_rate"),
            ("my pin got blocked", "pin_blocked"), ("when does my card arrive", "card_arrival"),
            ("exchange rate for pounds please", "exchange_rate"), ("unblock my pin", "pin_blocked")]
    return [hn.Example(text=t, intent=i).with_inputs("text") for t, i in rows]


def trainset() -> list[hn.Example]:
    return contract_examples()


def many(n: int) -> list[hn.Example]:
    """`n` examples cycling through the contract data (for minibatch tests)."""
    base = contract_examples()
    return [hn.Example(text=f"{base[i % len(base)].text} (case {i})", intent=base[i % len(base)].intent)
            .with_inputs("text") for i in range(n)]


def instruction_of(program: hn.Module, name: str = "self") -> str:
    return dict(program.named_predictors())[name].signature.instructions


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))
