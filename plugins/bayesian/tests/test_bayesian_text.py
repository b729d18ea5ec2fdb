"""Cleaning what a small prompt model writes into an instruction (seen on the embedded model)."""

from __future__ import annotations

from honing_bayesian.text import clean_proposal

TOPIC = "Classify the banking customer query into one intent. text intent card arrival"


def test_a_copy_of_the_demo_layout_is_cut_off():
    text, verdict = clean_proposal("Decide what the customer asks about. | Intent: card_arrival.", topic=TOPIC)
    assert (text, verdict) == ("Decide what the customer asks about.", "ok")


def test_labels_quotes_and_markdown_are_stripped_and_junk_rejected():
    assert clean_proposal('**Proposed instruction:** "Classify the banking query by intent."', topic=TOPIC) == \
        ("Classify the banking query by intent.", "ok")
    assert clean_proposal("", topic=TOPIC) == (None, "empty")
    assert clean_proposal("Intent.", topic=TOPIC) == (None, "not_a_sentence")
    assert clean_proposal("Design a red car with shiny wheels.", topic=TOPIC) == (None, "off_topic")
    assert clean_proposal("Classify the banking query by intent.", topic=TOPIC,
                          taken=["classify the Banking query by intent"]) == (None, "duplicate")
