"""Built-in metrics: exact_match and f1 over the label fields a prediction shares."""

import enum

import pytest
from hypothesis import given
from hypothesis import strategies as st

import honing as hn
from honing.metrics import BUILTIN, exact_match, f1, normalize

E, P = hn.Example, hn.Prediction


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


class Level(enum.Enum):
    ONE = 1


@pytest.mark.parametrize("text, normal", [
    ("The Cat!", "cat"), ("  a  dog  ", "dog"), ("An apple, please.", "apple please"),
    ("pin_blocked", "pin_blocked"),
    ("THEATER", "theater"), (Mood.HAPPY, "happy"), (True, "true"), (42, "42"),
])
def test_normalize(text, normal):
    assert normalize(text) == normal


def test_exact_match_compares_labels_with_the_same_named_fields():
    ex = E(question="Capital of France?", answer="Paris").with_inputs("question")
    assert exact_match(ex, P(answer="paris.")) is True
    assert exact_match(ex, P(answer="The Paris")) is True
    assert exact_match(ex, P(answer="Lyon")) is False
    assert exact_match(ex, P(answer="Paris", reasoning="because")) is True  # extra fields are ignored


def test_exact_match_needs_every_shared_label_to_match():
    ex = E(q="x", a="1", b="2").with_inputs("q")
    assert exact_match(ex, P(a="1", b="2")) is True
    assert exact_match(ex, P(a="1", b="3")) is False
    assert exact_match(ex, P(a="1")) is True  # only the shared fields are compared


def test_exact_match_ignores_inputs_even_if_the_prediction_echoes_them():
    ex = E(q="question", a="yes").with_inputs("q")
    assert exact_match(ex, P(q="something else", a="yes")) is True


def test_exact_match_without_input_keys_compares_every_field():
    assert exact_match(E(a="x", b="y"), P(a="x", b="y")) is True
    assert exact_match(E(a="x", b="y"), P(a="x", b="z")) is False


def test_no_shared_field_is_an_error_listing_both_sides():
    with pytest.raises(ValueError, match=r"answer.*prediction fields: other"):
        exact_match(E(q="x", answer="y").with_inputs("q"), P(other="y"))


def test_bookkeeping_labels_are_ignored():
    ex = E(q="x", a="y", _source="train[1]").with_inputs("q")
    assert exact_match(ex, P(a="y", _source="other")) is True


@pytest.mark.parametrize("gold, pred, same", [
    (8, 8, True), (8, 8.0, True), (3.5, 35, False), (8, "8", True), ("8.0", 8, True), ("3.5", 35, False),
    (8, 9, False), ("eight", 8, False), (True, "True", True), (True, False, False), (True, 1, False),
    (Mood.HAPPY, "happy", True), (Mood.SAD, "happy", False), (Level.ONE, 1, True),
    (["a", "b"], ["A", "b."], True), (["a b"], ["a", "b"], False), (["a"], ["a", "b"], False),
    ([1, 2], [1, 2], True), ([1.5], [15], False),
])
def test_exact_match_on_typed_values(gold, pred, same):
    assert exact_match(E(v=gold), P(v=pred)) is same


def test_f1_token_overlap():
    ex = E(q="x", answer="the quick brown fox").with_inputs("q")
    assert f1(ex, P(answer="quick brown fox")) == pytest.approx(1.0)
    assert f1(ex, P(answer="quick fox jumps")) == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert f1(ex, P(answer="slow dog")) == 0.0
    assert f1(ex, P(answer="")) == 0.0


def test_f1_counts_repeated_tokens_once_per_occurrence():
    ex = E(a="cat cat dog")
    # pred "cat cat cat": overlap 2, precision 2/3, recall 2/3
    assert f1(ex, P(a="cat cat cat")) == pytest.approx(2 / 3)


def test_f1_on_empty_strings_and_numbers():
    assert f1(E(a=""), P(a="")) == 1.0
    assert f1(E(a="the"), P(a="")) == 1.0  # both normalise to nothing
    assert f1(E(a=3.5), P(a=35)) == 0.0
    assert f1(E(a=2), P(a=2.0)) == 1.0


def test_f1_averages_over_shared_fields():
    ex = E(q="x", a="red apple", b="green").with_inputs("q")
    assert f1(ex, P(a="red apple", b="blue")) == pytest.approx(0.5)


def test_builtin_registry():
    assert BUILTIN == {"exact_match": exact_match, "f1": f1}
    assert hn.metrics.exact_match is exact_match


def test_metrics_accept_a_trace_argument():
    assert exact_match(E(a="x"), P(a="x"), trace=[]) is True
    assert f1(E(a="x"), P(a="x"), None) == 1.0


_words = st.lists(st.sampled_from(["red", "green", "blue", "cat", "dog", "a", "the", "x1"]), max_size=6)


@given(_words, _words)
def test_f1_is_symmetric_and_bounded(gold, pred):
    g, p = " ".join(gold), " ".join(pred)
    score = f1(E(a=g), P(a=p))
    assert 0.0 <= score <= 1.0
    assert score == pytest.approx(f1(E(a=p), P(a=g)))
    if exact_match(E(a=g), P(a=p)):
        assert score == 1.0


@given(st.text(max_size=20))
def test_exact_match_is_reflexive_and_case_insensitive(text):
    assert exact_match(E(a=text), P(a=text)) is True
    assert exact_match(E(a=text), P(a=text.upper() if text.upper().lower() == text.lower() else text)) is True
