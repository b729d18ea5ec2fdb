"""Both optimizers pass the shared optimizer contract (scripted fake LM, no model, no network)."""

from __future__ import annotations

from typing import Any

from honing.testing.contract import OptimizerContract, intent_match
from honing.testing.fake import FakeLM, nearest_demo_responder
from honing_bayesian import BayesianSignatureOptimizer, SignatureOptimizer


def contract_lm() -> FakeLM:
    """The contract's fake without choice scoring: the transcript adapter memoises calibration scores per
    LM object in memory, so with scoring the second of two identical compiles makes fewer calls and the
    records (which count calls) differ."""
    return FakeLM(responder=nearest_demo_responder("Text", "Intent"))


class TestSignatureOptimizerContract(OptimizerContract):
    optimizer_name = "SignatureOptimizer"

    def make_lm(self) -> Any:
        return contract_lm()

    def make_optimizer(self, **overrides):
        return SignatureOptimizer(**{"metric": intent_match, "breadth": 3, "depth": 2, "seed": 0, **overrides})


class TestBayesianSignatureOptimizerContract(OptimizerContract):
    optimizer_name = "BayesianSignatureOptimizer"

    def make_lm(self) -> Any:
        return contract_lm()

    def make_optimizer(self, **overrides):
        return BayesianSignatureOptimizer(**{"metric": intent_match, "auto": None, "num_candidates": 3,
                                             "num_trials": 4, "seed": 0, **overrides})
