"""Candidates sized by what the context holds (`fit_demos`), and selection that does not chase noise
(`SearchState` with an incumbent and a paired comparison)."""

from __future__ import annotations

import honing as hn
import pytest
from honing.lm.types import Usage
from honing.optimizers.kit.fit import fit_demos
from honing.optimizers.kit.search import CandidateResult, SearchState
from honing.testing.contract import ContractClassify, contract_examples
from honing.testing.fake import FakeLM


def prompt_words(n_demos: int) -> int:
    """Words of the transcript prompt with the `n_demos` longest contract demos and the longest query."""
    program = hn.Predict(ContractClassify)
    lm = FakeLM(scoring=True, context_window=10_000)
    with hn.context(lm=lm):
        full = fit_demos(program, contract_examples(), reserve_tokens=0)
    assert full.counts == {"self": 12}
    from honing.optimizers.kit.demos import labeled_demos
    from honing.plugins.lookup import resolve_adapter

    demos = sorted(labeled_demos(program, contract_examples()), key=lambda d: -len(d["text"] + d["intent"]))
    query = max((e.inputs() for e in contract_examples()), key=lambda q: len(q["text"]))
    request = resolve_adapter(None, lm).format(program.signature, demos[:n_demos], dict(query))
    return lm.count_tokens(request)


def test_every_usable_demo_fits_a_large_context():
    with hn.context(lm=FakeLM(scoring=True, context_window=100_000)):
        fit = fit_demos(hn.Predict(ContractClassify), contract_examples())
    assert fit.counts == fit.usable == {"self": 12}
    assert fit.notes() == []


def test_a_small_context_holds_the_largest_k_that_leaves_room():
    room = 50
    window = prompt_words(5) + room  # five of the longest demos fit, a sixth does not
    assert prompt_words(6) + room > window
    with hn.context(lm=FakeLM(scoring=True, context_window=window)):
        fit = fit_demos(hn.Predict(ContractClassify), contract_examples(), reserve_tokens=room)
    assert fit.counts == {"self": 5}
    (note,) = fit.notes()
    assert "5 of 12 usable training examples fit" in note and f"{window}-token context" in note


def test_a_context_too_small_for_one_demo_is_said():
    with hn.context(lm=FakeLM(scoring=True, context_window=prompt_words(0) + 10)):
        fit = fit_demos(hn.Predict(ContractClassify), contract_examples(), reserve_tokens=10)
    assert fit.counts == {"self": 0}
    assert "not even one demo fits" in fit.notes()[0]


def test_an_unknown_context_or_an_estimated_count_is_said():
    with hn.context(lm=FakeLM(scoring=True)):  # no context_window
        fit = fit_demos(hn.Predict(ContractClassify), contract_examples())
    assert fit.counts == {"self": 12} and "context size is unknown" in fit.notes()[0]
    estimating = FakeLM(scoring=True, context_window=prompt_words(3) + 256)
    estimating.exact_token_counts = False  # like a hosted model counted by litellm
    with hn.context(lm=estimating):
        fit = fit_demos(hn.Predict(ContractClassify), contract_examples())
    assert fit.counts == {"self": 3} and "litellm's estimate" in fit.notes()[0]


def test_a_hosted_lm_reports_its_context_and_counts_with_litellm():
    lm = hn.LM("openai/gpt-4o-mini", api_key="sk-test-not-used")
    assert lm.context_window and lm.context_window >= 100_000
    assert not lm.exact_token_counts
    assert 3 <= lm.count_tokens("how long does card delivery take") <= 12


@pytest.mark.local_lm
def test_the_embedded_model_counts_with_its_tokenizer(local_lm):
    assert local_lm.context_window == 8192 and local_lm.exact_token_counts
    text = "Text: where is my new card\nIntent:"
    assert local_lm.count_tokens(text) == len(local_lm._backend.engine.tokenize(text))
    with hn.context(lm=local_lm):
        fit = fit_demos(hn.Predict(ContractClassify), contract_examples())
    assert fit.counts == {"self": 12}  # a dozen short demos fit 8k tokens


# ----------------------------------------------------------------------------------------------------
# selection

def result(key: str, scores: list[float]) -> CandidateResult:
    return CandidateResult(key, sum(scores) / len(scores), 0, Usage(), 0.0, {}, {}, len(scores),
                           example_scores=scores)


def test_the_incumbent_keeps_ties_and_wins_within_the_noise():
    state = SearchState(confidence_z=1.645, incumbent="labeled")
    state.add(result("zero_shot", [1, 0, 0, 0, 1, 1, 0, 0, 1, 0]))  # scored first, but not the incumbent
    state.add(result("labeled", [1, 1, 0, 0, 1, 0, 0, 1, 1, 0]))
    assert state.best.key == "labeled"
    state.add(result("lucky", [1, 1, 1, 1, 1, 0, 0, 1, 1, 0]))  # +2 of two changed examples: noise
    assert state.best.key == "labeled"
    state.add(result("better", [1, 1, 1, 1, 1, 1, 0, 1, 1, 1]))  # +4 of 4 changed: clear
    assert state.best.key == "better"


def test_without_confidence_the_highest_score_wins_with_the_tie_break():
    state = SearchState(tie_break=lambda r: len(r.key))
    state.add(result("a", [1, 0]))
    state.add(result("bb", [0, 1]))  # same score, larger tie-break
    state.add(result("c", [0, 0]))
    assert state.best.key == "bb"
