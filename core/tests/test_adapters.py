"""Adapters: the transcript (local models), chat (tags) and JSON formats, and adapter resolution."""

import enum
import json
from typing import Literal, Optional

import pytest

import honing as hn
from honing.adapters import (
    Adapter,
    ChatAdapter,
    JSONAdapter,
    TranscriptAdapter,
    default_adapter_name,
)
from honing.adapters.base import demo_fields, type_hint, usable_demos
from honing.adapters.json import json_schema, signature_schema
from honing.adapters.transcript import CONTENT_FREE, effective_decoding
from honing.plugins.lookup import resolve_adapter
from honing.errors import HoningError, ParseError
from honing.lm.types import LMRequest
from honing.signatures import Field, parse_signature
from honing.testing.fake import FakeLM


class Sentiment(hn.Signature):
    """Classify the sentiment of a review."""

    review: str = hn.InputField(desc="a product review")
    sentiment: Literal["positive", "negative"] = hn.OutputField()
    stars: int = hn.OutputField(desc="1 to 5")


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


QA = parse_signature("question -> answer")


# -- shared helpers --------------------------------------------------------------------------------

def test_usable_demos_need_an_input_and_an_output():
    demos = [{"review": "good", "sentiment": "positive"}, {"review": "only input"}, {"sentiment": "negative"},
             {"other": 1}]
    assert usable_demos(Sentiment, demos) == [demos[0]]


def test_demo_fields_render_in_signature_order_and_skip_bookkeeping():
    demo = {"stars": 5, "_source": "trainset[3]", "review": "great", "sentiment": "positive"}
    assert [(f.name, text) for f, text in demo_fields(Sentiment, demo)] == [
        ("review", "great"), ("sentiment", "positive"), ("stars", "5")]


def test_type_hints():
    assert type_hint(Sentiment.output_fields[0]) == "one of: positive, negative"
    assert type_hint(Sentiment.output_fields[1]) == "an integer"
    assert type_hint(Field("x", "output", bool)) == "one of: True, False"
    assert type_hint(Field("x", "output", str)) == ""
    assert "list[str]" in type_hint(Field("x", "output", list[str]))


def test_adapter_base_is_abstract():
    with pytest.raises(NotImplementedError):
        Adapter().format(QA, [], {"question": "q"})
    with pytest.raises(NotImplementedError):
        Adapter().run(FakeLM(), QA, [], {"question": "q"})


def test_resolve_adapter():
    chat = ChatAdapter()
    assert resolve_adapter(chat, None) is chat
    assert isinstance(resolve_adapter("json", None), JSONAdapter)
    assert isinstance(resolve_adapter("chat", None), ChatAdapter)
    assert isinstance(resolve_adapter(None, FakeLM()), TranscriptAdapter)
    assert isinstance(resolve_adapter(None, FakeLM(default_adapter="chat")), ChatAdapter)
    with pytest.raises(HoningError, match="nope"):
        resolve_adapter("nope", None)


def test_default_adapter_name():
    class Local:
        provider = "local"

    class Remote:
        provider = "openai"

    assert default_adapter_name(Local()) == "transcript"
    assert default_adapter_name(Remote()) == "chat"
    assert default_adapter_name(FakeLM(default_adapter="json")) == "json"


def test_configured_adapter_is_used():
    lm = FakeLM(['{"answer": "from json"}'])
    with hn.context(lm=lm, adapter="json"):
        assert hn.Predict(QA)(question="q").answer == "from json"
    assert lm.requests[0].response_format == {"type": "json_object"}


# -- transcript ------------------------------------------------------------------------------------

def test_transcript_prompt_layout_with_demos_before_the_query():
    demos = [{"review": "Loved it", "sentiment": "positive", "stars": 5},
             {"review": "no outputs, skipped"},
             {"review": "Broke", "sentiment": "negative", "stars": 1, "_source": "x"}]
    prompt = TranscriptAdapter().render_prompt(Sentiment, demos, {"review": "Meh"})
    assert prompt == (
        "Classify the sentiment of a review.\n"
        "Review means: a product review\n"
        "Sentiment is one of: positive, negative.\n"
        "Stars means: 1 to 5\n"
        "Stars is an integer.\n"
        "\n"
        "Review: Loved it\nSentiment: positive\nStars: 5\n"
        "\n"
        "Review: Broke\nSentiment: negative\nStars: 1\n"
        "\n"
        "Review: Meh\nSentiment:"
    )


def test_transcript_without_listed_choices_keeps_open_hints():
    header = TranscriptAdapter(list_choices=False).header(Sentiment)
    assert "one of" not in header
    assert "Stars is an integer." in header


def test_transcript_format_is_a_prompt_request_with_field_stops():
    request = TranscriptAdapter().format(QA, [], {"question": "Why?"})
    assert request.messages is None
    assert request.prompt.endswith("Question: Why?\nAnswer:")
    assert "\n\n" in request.stop and "\nQuestion:" in request.stop and "\nAnswer:" in request.stop


def test_transcript_renders_typed_demo_and_input_values():
    sig = parse_signature("items: list[str], flag: bool -> mood: Enum[Mood: 'happy', 'sad']")
    prompt = TranscriptAdapter().render_prompt(sig, [{"items": ["a"], "flag": True, "mood": Mood.SAD}],
                                               {"items": ["x", "y"], "flag": False})
    assert 'Items: ["a"]\nFlag: True\nMood: sad' in prompt
    assert prompt.endswith('Items: ["x", "y"]\nFlag: False\nMood:')


def test_transcript_decodes_one_field_at_a_time_extending_the_prompt():
    lm = FakeLM(["negative", " 2 \n"])
    outputs, meta = TranscriptAdapter().run(lm, Sentiment, [], {"review": "Bad"})
    assert outputs == {"sentiment": "negative", "stars": 2}
    assert meta == {"adapter": "transcript", "decoding": {"sentiment": "generate", "stars": "generate"},
                    "raw": {"sentiment": "negative", "stars": "2"}}
    first, second = (r.prompt for r in lm.requests)
    assert first.endswith("Review: Bad\nSentiment:")
    assert second == first + " negative\nStars:"
    assert all(r.grammar is None and r.choices == () for r in lm.requests)
    assert lm.requests[1].stop == ("\n",)


def test_transcript_open_text_stops_at_the_next_field():
    sig = parse_signature("q -> answer, note")
    lm = FakeLM(["  the answer  ", "a note"])
    outputs, _ = TranscriptAdapter().run(lm, sig, [], {"q": "x"}, max_tokens=33, temperature=0.5)
    assert outputs == {"answer": "the answer", "note": "a note"}
    request = lm.requests[0]
    assert set(request.stop) >= {"\n\n", "\nQ:", "\nAnswer:", "\nNote:"}
    assert request.max_tokens == 33 and request.temperature == 0.5


def test_transcript_parse_error_names_the_field():
    with pytest.raises(ParseError) as info:
        TranscriptAdapter().run(FakeLM(["positive", "many"]), Sentiment, [], {"review": "x"})
    assert info.value.field == "stars" and info.value.expected == "int" and info.value.raw == "many"


def scoring_lm(query_scores, blank_scores=None):
    """Choice log-likelihoods for the real query and for the content-free ("N/A") query."""

    def respond(request):
        if request.choices:
            table = blank_scores if blank_scores and "Review: N/A" in request.prompt else query_scores
            return {c: table[c.strip()] for c in request.choices}
        return "3"

    return FakeLM(responder=respond, scoring=True)


def test_transcript_scores_closed_outputs_by_choice_log_likelihood():
    lm = scoring_lm({"positive": -0.5, "negative": -2.0})
    outputs, meta = TranscriptAdapter().run(lm, Sentiment, [], {"review": "Fine"}, decoding="score")
    assert outputs["sentiment"] == "positive"
    assert meta["decoding"] == {"sentiment": "score", "stars": "grammar"}
    choice_request = lm.requests[0]
    assert choice_request.choices == (" positive", " negative")
    assert choice_request.prompt.endswith("Review: Fine\nSentiment:")
    assert len(lm.requests) == 2  # no calibration request


def test_transcript_calibration_subtracts_the_content_free_prior():
    query = {"positive": -1.0, "negative": -1.5}
    blank = {"positive": 0.0, "negative": -2.0}  # the model simply likes "positive"
    scored, _ = TranscriptAdapter().run(scoring_lm(query, blank), Sentiment, [], {"review": "Hmm"},
                                        decoding="score")
    lm = scoring_lm(query, blank)
    calibrated, meta = TranscriptAdapter().run(lm, Sentiment, [], {"review": "Hmm"}, decoding="calibrated")
    assert scored["sentiment"] == "positive"
    assert calibrated["sentiment"] == "negative"
    assert meta["decoding"]["sentiment"] == "calibrated"
    assert any("Review: N/A\nSentiment:" in r.prompt for r in lm.requests if r.choices)


def test_transcript_calibration_is_cached_per_prompt():
    adapter = TranscriptAdapter()
    lm = scoring_lm({"positive": -1.0, "negative": -1.5}, {"positive": 0.0, "negative": -2.0})
    adapter.run(lm, Sentiment, [], {"review": "one"}, decoding="calibrated")
    first = len(lm.requests)
    adapter.run(lm, Sentiment, [], {"review": "two"}, decoding="calibrated")
    assert len(lm.requests) - first == first - len(CONTENT_FREE)  # the content-free requests are not repeated


def test_transcript_auto_decoding_on_a_scoring_lm():
    sig = parse_signature("q -> flag: bool, label: Literal['a', 'b'], n: int, text")

    def respond(request):
        if request.choices:
            return {c: (0.0 if c.strip() in ("False", "b") else -1.0) for c in request.choices}
        return "7" if request.prompt.endswith("N:") else "free text"

    lm = FakeLM(responder=respond, scoring=True)
    outputs, meta = TranscriptAdapter().run(lm, sig, [], {"q": "x"})
    assert meta["decoding"] == {"flag": "calibrated", "label": "calibrated", "n": "grammar",
                                "text": "generate"}
    assert outputs["n"] == 7 and outputs["text"] == "free text"
    grammar_requests = [r for r in lm.requests if r.grammar]
    assert len(grammar_requests) == 1 and "root" in grammar_requests[0].grammar
    assert any(r.choices == (" True", " False") for r in lm.requests)


def test_transcript_predict_decoding_option_reaches_the_adapter():
    lm = scoring_lm({"positive": -3.0, "negative": -0.1})
    pred = hn.Predict(Sentiment, lm=lm, decoding="score")(review="x")
    assert pred.sentiment == "negative" and pred.stars == 3
    assert pred.meta["decoding"]["sentiment"] == "score"


@pytest.mark.parametrize("requested, annotation, scoring, grammar, expected", [
    ("auto", Literal["a"], True, True, "calibrated"),
    ("auto", Literal["a"], False, True, "grammar"),
    ("auto", Literal["a"], False, False, "generate"),
    ("auto", int, True, True, "grammar"),
    ("auto", str, True, True, "generate"),
    ("score", bool, True, True, "score"),
    ("score", int, True, True, "grammar"),
    ("calibrated", Literal["a"], False, False, "generate"),
    ("grammar", Literal["a"], True, True, "grammar"),
    ("generate", Literal["a"], True, True, "generate"),
    ("grammar", str, True, True, "generate"),
])
def test_effective_decoding(requested, annotation, scoring, grammar, expected):
    lm = FakeLM()
    lm.supports_choice_scoring, lm.supports_grammar = scoring, grammar
    assert effective_decoding(requested, Field("x", "output", annotation), lm) == expected


def test_transcript_calibration_cache_is_keyed_by_the_choices():
    adapter = TranscriptAdapter(list_choices=False)
    lm = FakeLM(responder=lambda r: {c: 0.0 for c in r.choices}, scoring=True)
    first = parse_signature("text -> label: Literal['a', 'b']")
    second = parse_signature("text -> label: Literal['c', 'd']")
    adapter.run(lm, first, [], {"text": "x"}, decoding="calibrated")
    outputs, _ = adapter.run(lm, second, [], {"text": "x"}, decoding="calibrated")
    assert outputs["label"] in ("c", "d")


def _biased_responder(prior):
    def respond(request):
        if "Text: N/A" in request.prompt:
            return {" a": 0.0 if prior == "a" else -4.0, " b": 0.0 if prior == "b" else -4.0}
        return {" a": -1.0, " b": -1.0}

    return respond


def test_transcript_calibration_cache_never_serves_another_lms_scores():
    adapter = TranscriptAdapter()
    sig = parse_signature("text -> label: Literal['a', 'b']")
    first = FakeLM(responder=_biased_responder("a"), scoring=True)
    outputs, _ = adapter.run(first, sig, [], {"text": "x"}, decoding="calibrated")
    assert outputs["label"] == "b"  # the prior favours "a", so calibration picks "b"
    second = FakeLM(responder=_biased_responder("b"), scoring=True)
    # simulate a new LM that reuses the first one's id (as CPython does after the first is freed)
    adapter._calibration = {(id(second), *key[1:]): entry for key, entry in adapter._calibration.items()}
    outputs, _ = adapter.run(second, sig, [], {"text": "x"}, decoding="calibrated")
    assert outputs["label"] == "a"  # this LM's prior favours "b"


# -- chat --------------------------------------------------------------------------------------------

def test_chat_format_messages():
    demos = [{"review": "Loved it", "sentiment": "positive", "stars": 5}, {"review": "no outputs"}]
    request = ChatAdapter().format(Sentiment, demos, {"review": "Meh"})
    assert request.prompt is None
    roles = [m["role"] for m in request.messages]
    assert roles == ["system", "user", "assistant", "user"]
    system = request.messages[0]["content"]
    assert system.startswith("Classify the sentiment of a review.")
    assert "- review: a product review" in system
    assert "- sentiment: one of: positive, negative" in system
    assert "- stars: 1 to 5; an integer" in system
    assert system.endswith("<sentiment>...</sentiment>\n<stars>...</stars>")
    assert request.messages[1]["content"] == "<review>Loved it</review>"
    assert request.messages[2]["content"] == "<sentiment>positive</sentiment>\n<stars>5</stars>"
    assert request.messages[3]["content"] == "<review>Meh</review>"


def test_chat_parse_tags():
    adapter = ChatAdapter()
    assert adapter.parse(Sentiment, "<sentiment>Negative</sentiment>\n<stars> 2.</stars>") == {
        "sentiment": "negative", "stars": 2}
    # order and surrounding chatter do not matter; an unclosed last tag runs to the end
    assert adapter.parse(Sentiment, "Sure!\n<stars>4</stars> and <sentiment>positive") == {
        "sentiment": "positive", "stars": 4}
    multi = adapter.parse(QA, "<answer>line one\nline two</answer>")
    assert multi == {"answer": "line one\nline two"}


def test_chat_parse_similar_field_names():
    sig = parse_signature("q -> a, ab")
    assert ChatAdapter().parse(sig, "<ab>2</ab><a>1</a>") == {"a": "1", "ab": "2"}


def test_chat_missing_field_is_a_parse_error_naming_it():
    with pytest.raises(ParseError) as info:
        ChatAdapter().parse(Sentiment, "<sentiment>positive</sentiment>")
    assert info.value.field == "stars" and info.value.expected == "int"
    assert "<sentiment>positive</sentiment>" in info.value.raw
    assert "stars" in str(info.value)


def test_chat_bad_value_is_a_parse_error_naming_the_field():
    with pytest.raises(ParseError) as info:
        ChatAdapter().parse(Sentiment, "<sentiment>meh</sentiment><stars>3</stars>")
    assert info.value.field == "sentiment"


def test_chat_accepts_a_bare_value_for_a_single_output():
    single = parse_signature("q -> n: int")
    assert ChatAdapter().parse(single, " 8.\n") == {"n": 8}
    assert ChatAdapter().parse(QA, "x < y, so yes") == {"answer": "x < y, so yes"}
    with pytest.raises(ParseError):
        ChatAdapter().parse(single, "<other>8</other>")
    with pytest.raises(ParseError):  # two outputs: a bare value is ambiguous
        ChatAdapter().parse(Sentiment, "positive")


def test_chat_run_through_predict():
    lm = FakeLM(["<sentiment>positive</sentiment><stars>5</stars>"], default_adapter="chat")
    pred = hn.Predict(Sentiment, lm=lm, temperature=0.2, max_tokens=50)(review="great")
    assert (pred.sentiment, pred.stars) == ("positive", 5)
    assert pred.meta["adapter"] == "chat"
    assert lm.requests[0].temperature == 0.2 and lm.requests[0].max_tokens == 50


# -- JSON --------------------------------------------------------------------------------------------

def test_json_format_messages():
    sig = parse_signature("text, mood: Enum[Mood: 'happy', 'sad'] -> ok: bool, tags: list[str]")
    demos = [{"text": "hi", "mood": Mood.HAPPY, "ok": True, "tags": ["x"]}]
    request = JSONAdapter().format(sig, demos, {"text": "yo", "mood": Mood.SAD})
    assert [m["role"] for m in request.messages] == ["system", "user", "assistant", "user"]
    assert 'keys "ok", "tags"' in request.messages[0]["content"]
    assert json.loads(request.messages[1]["content"]) == {"text": "hi", "mood": "happy"}
    assert json.loads(request.messages[2]["content"]) == {"ok": True, "tags": ["x"]}
    assert json.loads(request.messages[3]["content"]) == {"text": "yo", "mood": "sad"}
    assert request.response_format == {"type": "json_object"}


def test_json_uses_the_schema_when_the_lm_supports_it():
    lm = FakeLM(['{"sentiment": "positive", "stars": 4}'], default_adapter="json")
    lm.supports_response_schema = True
    pred = hn.Predict(Sentiment, lm=lm)(review="ok")
    assert (pred.sentiment, pred.stars) == ("positive", 4)
    fmt = lm.requests[0].response_format
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Sentiment"
    assert fmt["json_schema"]["schema"] == signature_schema(Sentiment)


def test_json_without_schema_support_asks_for_a_json_object():
    lm = FakeLM(['{"answer": "x"}'], default_adapter="json")
    hn.Predict(QA, lm=lm)(question="q")
    assert lm.requests[0].response_format == {"type": "json_object"}


def test_signature_schema():
    assert signature_schema(Sentiment) == {
        "type": "object",
        "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]},
                       "stars": {"type": "integer"}},
        "required": ["sentiment", "stars"],
        "additionalProperties": False,
    }


@pytest.mark.parametrize("annotation, schema", [
    (str, {"type": "string"}), (float, {"type": "number"}), (bool, {"type": "boolean"}),
    (Literal[1, 2], {"type": "integer", "enum": [1, 2]}),
    (Mood, {"type": "string", "enum": ["happy", "sad"]}),
    (list[int], {"type": "array", "items": {"type": "integer"}}),
    (dict[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
    (Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
])
def test_json_schema_of_types(annotation, schema):
    assert json_schema(annotation) == schema


def test_json_parse():
    adapter = JSONAdapter()
    assert adapter.parse(Sentiment, '{"sentiment": "Positive", "stars": 5}') == {
        "sentiment": "positive", "stars": 5}
    fenced = 'Here you go:\n```json\n{"sentiment": "negative", "stars": "2"}\n```'
    assert adapter.parse(Sentiment, fenced) == {"sentiment": "negative", "stars": 2}
    sig = parse_signature("q -> tags: list[str], n: Optional[int], m: dict[str, int], flag: bool")
    assert adapter.parse(sig, '{"tags": ["a"], "n": null, "m": {"x": 1}, "flag": false}') == {
        "tags": ["a"], "n": None, "m": {"x": 1}, "flag": False}


def test_json_missing_key_is_a_parse_error_naming_it():
    with pytest.raises(ParseError) as info:
        JSONAdapter().parse(Sentiment, '{"sentiment": "positive"}')
    assert info.value.field == "stars" and info.value.expected == "int"
    assert info.value.raw == '{"sentiment": "positive"}'


def test_json_bad_value_is_a_parse_error_naming_the_field():
    with pytest.raises(ParseError) as info:
        JSONAdapter().parse(Sentiment, '{"sentiment": "positive", "stars": 4.5}')
    assert info.value.field == "stars"


@pytest.mark.parametrize("reply", ["not json at all", "[1, 2]", '{"sentiment": '])
def test_json_non_object_replies_are_parse_errors(reply):
    with pytest.raises(ParseError) as info:
        JSONAdapter().parse(Sentiment, reply)
    assert info.value.raw == reply


def test_json_accepts_a_bare_value_for_a_single_output():
    adapter = JSONAdapter()
    assert adapter.parse(parse_signature("q -> n: int"), "8") == {"n": 8}
    assert adapter.parse(QA, '"quoted"') == {"answer": "quoted"}
    assert adapter.parse(QA, "just words") == {"answer": "just words"}
    assert adapter.parse(parse_signature("q -> s: Literal['pos', 'neg']"), "Neg.") == {"s": "neg"}


def test_lm_request_needs_exactly_one_of_prompt_or_messages():
    with pytest.raises(ValueError):
        LMRequest()
    with pytest.raises(ValueError):
        LMRequest(prompt="x", messages=[{"role": "user", "content": "y"}])
