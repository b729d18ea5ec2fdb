"""Reply text → typed values (lenient where models are sloppy, strict where guessing would be wrong)."""

import enum
import math
from typing import Literal, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from honing.adapters.parsing import closed_values, parse_value, render_value
from honing.errors import ParseError
from honing.signatures import Field


class Color(enum.Enum):
    RED = "red"
    DARK_BLUE = "dark blue"


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


def parse(text, annotation, name="out"):
    return parse_value(text, Field(name, "output", annotation))


@pytest.mark.parametrize("text", ["8", " 8.", "8\n", "8.0", "  8  ", "'8'", "8 apples", "+8",
                                  "The answer is 8."])
def test_int_is_lenient_about_surroundings(text):
    assert parse(text, int) == 8


@pytest.mark.parametrize("text, value", [("-3", -3), ("1,000", 1000), ("1_000", 1000), ("0", 0)])
def test_int_forms(text, value):
    assert parse(text, int) == value


@pytest.mark.parametrize("text", ["eight", "", "   ", "8.5", "3.25 apples"])
def test_int_rejects_non_integers(text):
    with pytest.raises(ParseError):
        parse(text, int)


@pytest.mark.parametrize("text, value", [("3.25", 3.25), (" .5", 0.5), ("-2e3", -2000.0), ("7", 7.0),
                                         ("about 1.5 km", 1.5), ("1e-07", 1e-07), ("1,234.5", 1234.5)])
def test_float(text, value):
    result = parse(text, float)
    assert result == value and isinstance(result, float)


@pytest.mark.parametrize("text", ["", "n/a", "pi"])
def test_float_rejects_text_without_numbers(text):
    with pytest.raises(ParseError):
        parse(text, float)


@pytest.mark.parametrize("text, value", [
    ("True", True), ("false", False), ("Yes", True), ("no.", False), (" TRUE\n", True), ("'False'", False),
    ("1", True), ("0", False), ("Yes, it is urgent", True), ("No: not at all", False), ("correct", True),
])
def test_bool(text, value):
    assert parse(text, bool) is value


@pytest.mark.parametrize("text", ["maybe", "", "True-ish", "perhaps yes"])
def test_bool_rejects_other_words(text):
    with pytest.raises(ParseError):
        parse(text, bool)


SENTIMENT = Literal["positive", "negative", "neutral"]


@pytest.mark.parametrize("text, value", [
    ("positive", "positive"), ("POSITIVE", "positive"), ("Negative", "negative"), (" neutral.\n", "neutral"),
    ('"negative"', "negative"), ("`neutral`", "neutral"), ("positive, because it is nice", "positive"),
])
def test_literal_matches_case_insensitively_and_ignores_quotes(text, value):
    assert parse(text, SENTIMENT) == value


@pytest.mark.parametrize("text", ["happy", "", "positively", "pos"])
def test_literal_rejects_other_values(text):
    with pytest.raises(ParseError, match="one of: positive, negative, neutral"):
        parse(text, SENTIMENT)


def test_literal_prefers_the_exact_and_then_the_longest_choice():
    intents = Literal["pin", "pin_blocked", "pin_blocked_twice"]
    assert parse("pin", intents) == "pin"
    assert parse("pin_blocked", intents) == "pin_blocked"
    assert parse("PIN_BLOCKED_TWICE", intents) == "pin_blocked_twice"
    assert parse("pin_blocked: the card", intents) == "pin_blocked"
    assert parse("pin blocked", intents) == "pin_blocked"


def test_literal_choices_ending_in_punctuation():
    assert parse("Yes!", Literal["Yes!", "No"]) == "Yes!"
    assert parse("e.g.", Literal["e.g.", "i.e."]) == "e.g."
    assert parse("No.", Literal["Yes!", "No"]) == "No"


def test_literal_of_ints_and_bools():
    assert parse(" 2\n", Literal[1, 2, 3]) == 2
    assert parse("True", Literal[True, False]) is True


@pytest.mark.parametrize("text, value", [("red", Color.RED), ("RED", Color.RED),
                                         ("dark blue", Color.DARK_BLUE),
                                         ("dark_blue", Color.DARK_BLUE), ("Dark Blue.", Color.DARK_BLUE),
                                         ("2", Level.HIGH), ("low", Level.LOW)])
def test_enum_by_value_or_name(text, value):
    assert parse(text, type(value)) is value


def test_enum_rejects_unknown():
    with pytest.raises(ParseError):
        parse("green", Color)


@pytest.mark.parametrize("text", ["None", "none", "null", "N/A", "", "  "])
def test_optional_accepts_none_words(text):
    assert parse(text, Optional[int]) is None


def test_optional_passes_other_values_to_the_inner_type():
    assert parse("5", Optional[int]) == 5
    assert parse("hi", Optional[str]) == "hi"
    assert parse("neutral", Optional[SENTIMENT]) == "neutral"
    with pytest.raises(ParseError):
        parse("five", Optional[int])


@pytest.mark.parametrize("text, value", [
    ('["a", "b"]', ["a", "b"]), ("a, b", ["a", "b"]), ("- a\n- b\n", ["a", "b"]), ("[]", []),
    ('Here: ["x"] done', ["x"]), ("* one\n* two", ["one", "two"]),
])
def test_list_of_str(text, value):
    assert parse(text, list[str]) == value


def test_typed_lists_and_dicts():
    assert parse("[1, 2.0, \"3\"]", list[int]) == [1, 2, 3]
    assert parse("1, 2, 3", list[int]) == [1, 2, 3]
    assert parse('{"a": 1, "b": "2"}', dict[str, int]) == {"a": 1, "b": 2}
    assert parse('```json\n{"a": [true]}\n```', dict[str, list[bool]]) == {"a": [True]}
    assert parse('[["x"], []]', list[list[str]]) == [["x"], []]


@pytest.mark.parametrize("text, annotation", [
    ('["1", "x"]', list[int]), ("not json", dict[str, int]), ("[1, 2]", dict[str, int]),
    ('{"a": 1}', list[int]),
    ("[1.5]", list[int]), ('{"a": null}', dict[str, int]),
])
def test_bad_containers_raise(text, annotation):
    with pytest.raises(ParseError):
        parse(text, annotation)


def test_str_is_stripped_and_unquoted():
    assert parse("  Paris \n", str) == "Paris"
    assert parse('"Paris"', str) == "Paris"
    assert parse("it's 'fine'", str) == "it's 'fine'"


def test_parse_error_names_field_expected_type_and_raw_text():
    with pytest.raises(ParseError) as info:
        parse("lots", int, name="count")
    err = info.value
    assert err.field == "count"
    assert err.expected == "int"
    assert err.raw == "lots"
    message = str(err)
    assert "'count'" in message and "int" in message and "'lots'" in message


def test_parse_error_is_a_value_error():
    with pytest.raises(ValueError):
        parse("x", int)


def test_json_values_are_accepted_too():
    # the JSON adapter may hand over decoded values
    assert parse(8, int) == 8
    assert parse(8.0, int) == 8
    assert parse(True, bool) is True
    assert parse(None, Optional[int]) is None
    assert parse(["a", 1], list[str]) == ["a", "1"]
    with pytest.raises(ParseError):
        parse(8.5, int)
    with pytest.raises(ParseError):
        parse(None, int)


def test_render_value():
    assert render_value(True) == "True" and render_value(False) == "False"
    assert render_value(Color.DARK_BLUE) == "dark blue"
    assert render_value(["a", "é"]) == '["a", "é"]'
    assert render_value({"k": 1}) == '{"k": 1}'
    assert render_value(None) == "None"
    assert render_value(2.5) == "2.5"


def test_closed_values():
    assert closed_values(SENTIMENT) == ["positive", "negative", "neutral"]
    assert closed_values(Optional[Color]) == [Color.RED, Color.DARK_BLUE]
    assert closed_values(bool) == [True, False]
    assert closed_values(str) is None and closed_values(list[str]) is None


# -- round trips -------------------------------------------------------------------------------------

def round_trip(value, annotation):
    return parse_value(render_value(value), Field("x", "output", annotation))


@given(st.integers())
def test_int_round_trip(n):
    assert round_trip(n, int) == n
    assert parse(f" {n}.\n", int) == n


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_round_trip(x):
    back = round_trip(x, float)
    assert back == x and math.copysign(1, back) == math.copysign(1, x)


@given(st.booleans())
def test_bool_round_trip(b):
    assert round_trip(b, bool) is b


_choice_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="'\"`"), min_size=1,
                       max_size=10).map(str.strip).filter(bool)


@st.composite
def literal_and_value(draw):
    if draw(st.booleans()):
        choices = draw(st.lists(_choice_text, min_size=1, max_size=5, unique_by=str.lower))
    else:
        choices = draw(st.lists(st.integers(-1000, 1000), min_size=1, max_size=5, unique=True))
    return Literal[tuple(choices)], draw(st.sampled_from(choices))


@settings(max_examples=100, deadline=None)
@given(literal_and_value())
def test_literal_round_trip(case):
    annotation, value = case
    assert round_trip(value, annotation) == value


@given(st.sampled_from(list(Color) + list(Level)))
def test_enum_round_trip(member):
    assert round_trip(member, type(member)) is member


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(max_size=6), max_size=4), st.lists(st.integers(), max_size=4),
       st.dictionaries(st.text(max_size=4), st.integers(), max_size=3))
def test_container_round_trip(strs, ints, mapping):
    assert round_trip(strs, list[str]) == strs
    assert round_trip(ints, list[int]) == ints
    assert round_trip(mapping, dict[str, int]) == mapping


@given(st.one_of(st.none(), st.integers()))
def test_optional_round_trip(value):
    assert round_trip(value, Optional[int]) == value
