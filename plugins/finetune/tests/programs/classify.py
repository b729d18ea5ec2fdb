"""A tiny program for the CLI test: `plugins/finetune/tests/programs/classify.py:program`."""

import typing

import honing as hn


class Classify(hn.Signature):
    """Classify the banking customer query into one intent."""

    text: str = hn.InputField()
    intent: typing.Literal["card_arrival", "exchange_rate", "pin_blocked", "unknown"] = hn.OutputField()


def program() -> hn.Predict:
    return hn.Predict(Classify)
