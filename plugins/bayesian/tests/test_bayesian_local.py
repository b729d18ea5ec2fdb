"""Both optimizers on the embedded SmolLM2-135M, as task and prompt model (small settings).

The quality figures (10-intent Banking77, 60/40/dev) come from `bench/instruction.py`; these tests check
what must hold on the real model: the Bayesian search improves a task the student cannot do zero-shot,
what the proposer keeps is a clean one-line instruction (or nothing), and SignatureOptimizer never
returns a program worse than the student on the valset.
"""

from __future__ import annotations

import typing

import honing as hn
import pytest
from bayesian_helpers import devset, trainset
from honing.testing.contract import ContractClassify, intent_match
from honing_bayesian import BayesianSignatureOptimizer, SignatureOptimizer
from honing_bayesian.text import MAX_CHARS

pytestmark = [pytest.mark.local_lm, pytest.mark.slow]

#: A task the model cannot guess: queries routed to teams named by colour. Only demos (or an
#: instruction naming the mapping) teach it.
TEAM = {"card_arrival": "red", "exchange_rate": "green", "pin_blocked": "blue"}
MORE_VAL = [("has my new card been sent yet", "red"), ("the rate you gave me for yen looks wrong", "green"),
            ("my pin stopped working after I typed it wrong", "blue"), ("card delivery is taking ages", "red"),
            ("what rate will I get converting to dollars", "green"), ("I locked my pin, help", "blue")]


class Route(hn.Signature):
    """Route the banking customer query to a team."""

    text: str = hn.InputField()
    team: typing.Literal["red", "green", "blue"] = hn.OutputField()


def routed(examples: list[hn.Example]) -> list[hn.Example]:
    return [hn.Example(text=e.text, team=TEAM[e.intent]).with_inputs("text") for e in examples]


def team_match(example: hn.Example, prediction: hn.Prediction, trace: typing.Any = None) -> bool:
    return example.team == prediction.team


def test_bayesian_optimizer_improves_a_task_the_student_cannot_guess(local_lm):
    valset = routed(devset()) + [hn.Example(text=t, team=c).with_inputs("text") for t, c in MORE_VAL]
    with hn.context(lm=local_lm):
        student = hn.Predict(Route)
        zero_shot = hn.Evaluate(devset=valset, metric=team_match)(student).score
        compiled = BayesianSignatureOptimizer(team_match, auto=None, num_candidates=2, num_trials=4,
                                              max_bootstrapped_demos=0, max_labeled_demos=8).compile(
            student, trainset=routed(trainset()), valset=valset)
        again = hn.Evaluate(devset=valset, metric=team_match)(compiled).score
    record = compiled.compile_record
    assert record.scores["baseline"] == pytest.approx(zero_shot, abs=1e-6)  # the record keeps 6 decimals
    assert record.score >= zero_shot + 0.25, record.scores  # at least 3 more of 12 examples right
    assert again == record.score  # the returned program really scores what the record says
    assert any(n.startswith("plan:") for n in record.notes)


def test_signature_optimizer_is_never_worse_and_keeps_clean_instructions(local_lm):
    student = hn.Predict(ContractClassify)
    valset = devset()
    with hn.context(lm=local_lm):
        baseline = hn.Evaluate(devset=valset, metric=intent_match)(student).score
        compiled = SignatureOptimizer(intent_match, breadth=3, depth=1).compile(student, trainset=trainset(),
                                                                               valset=valset)
        again = hn.Evaluate(devset=valset, metric=intent_match)(compiled).score
    record = compiled.compile_record
    assert record.score >= baseline and again == record.score
    # every proposal the 135M model wrote was kept as one clean sentence or rejected, and counted
    for attempt in (c for c in record.candidates if c.get("origin") == "proposal"):
        text = attempt["instruction"]
        assert "\n" not in text and len(text) <= MAX_CHARS and text[-1] in ".!?"
        assert not text.lower().startswith(("instruction", "proposed"))
    assert any(n.startswith("prompt model:") for n in record.notes)
