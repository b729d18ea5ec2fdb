"""Python types -> GBNF grammars (honing.adapters.grammar).

The string-level tests run everywhere. The `local_lm` tests check each grammar's language with
llama.cpp's own grammar engine (`LocalEngine.grammar_accepts`) and decode with the real model under
each grammar, checking that the text parses as the type.
"""

from __future__ import annotations

import enum
import json
import typing
from typing import Any, Literal, Optional

import pytest

from honing.adapters.grammar import closed_choices, gbnf_literal, value_grammar
from honing.errors import SignatureError


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


Intent = Literal["card_arrival", "card_lost", "pin_change"]


# --------------------------------------------------------------------------------------------------
# string level


def test_gbnf_literal_escapes_quotes_backslashes_and_control_characters() -> None:
    assert gbnf_literal("plain") == '"plain"'
    assert gbnf_literal('say "hi"') == r'"say \"hi\""'
    assert gbnf_literal("a\\b") == r'"a\\b"'
    assert gbnf_literal("1\n2\r3\t4") == r'"1\n2\r3\t4"'
    assert gbnf_literal("\x00\x1f\x7f") == r'"\x00\x1F\x7F"'
    assert gbnf_literal("café ✓") == '"café ✓"'  # UTF-8 is written as is


def test_every_grammar_has_a_root_rule_and_only_defined_rules() -> None:
    import re

    for annotation in (str, int, float, bool, Intent, Color, list[str], list[int], Optional[int],
                       dict[str, int], list, dict, tuple[int, str], list[Optional[Color]], int | str):
        grammar = value_grammar(annotation)
        rules = dict(line.split(" ::= ", 1) for line in grammar.strip().splitlines())
        assert "root" in rules, annotation
        # every rule name used on a right-hand side (outside literals and classes) is defined
        for body in rules.values():
            bare = re.sub(r'"(\\.|[^"\\])*"|\[(\\.|[^\]\\])*\]', " ", body)
            for name in re.findall(r"[a-zA-Z][a-zA-Z0-9-]*", bare):
                assert name in rules, (annotation, name, grammar)


def test_leading_space_and_newline_modes() -> None:
    assert value_grammar(bool).startswith('root ::= " "? choice "\\n"?\n')
    assert value_grammar(bool, leading_space=True).startswith('root ::= " " choice "\\n"?\n')
    assert value_grammar(bool, leading_space=False).startswith('root ::= choice "\\n"?\n')
    assert value_grammar(bool, leading_space=False, newline=False).startswith("root ::= choice\n")


def test_literal_and_enum_grammars_list_exactly_their_values() -> None:
    assert 'choice ::= "card_arrival" | "card_lost" | "pin_change"' in value_grammar(Intent)
    assert 'choice ::= "red" | "green" | "blue"' in value_grammar(Color)
    assert 'choice ::= "1" | "2"' in value_grammar(Level)
    assert 'choice ::= "True" | "False"' in value_grammar(bool)
    assert r'choice ::= "a \"b\"" | "c\\d"' in value_grammar(Literal['a "b"', "c\\d"])


def test_list_items_are_json_encoded() -> None:
    grammar = value_grammar(list[Literal["x", "y"]])
    assert r'"\"x\"" | "\"y\""' in grammar
    assert "json-string" in value_grammar(list[str])
    assert "json-int" in value_grammar(list[int])


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (Intent, ["card_arrival", "card_lost", "pin_change"]),
        (Color, ["red", "green", "blue"]),
        (Level, ["1", "2"]),
        (bool, ["True", "False"]),
        (Optional[Intent], ["card_arrival", "card_lost", "pin_change", "None"]),
        (Literal[1, 2, None], ["1", "2", "None"]),
        (Literal["a"] | Color, ["a", "red", "green", "blue"]),
        (Literal["a", "a", "b"], ["a", "b"]),
        (typing.Annotated[bool, "doc"], ["True", "False"]),
    ],
)
def test_closed_choices_of_closed_types(annotation: Any, expected: list[str]) -> None:
    assert closed_choices(annotation) == expected


@pytest.mark.parametrize("annotation", [str, int, float, list[str], Optional[int], Literal["a"] | int, dict])
def test_closed_choices_is_none_for_open_types(annotation: Any) -> None:
    assert closed_choices(annotation) is None


class Opaque:
    pass


@pytest.mark.parametrize("annotation", [Opaque, Any, object, dict[int, str], list[Opaque], bytes,
                                        Literal["", "x"]])
def test_unsupported_types_raise_signature_error(annotation: Any) -> None:
    with pytest.raises(SignatureError):
        value_grammar(annotation)


# --------------------------------------------------------------------------------------------------
# llama.cpp's grammar engine and the real model


@pytest.fixture(scope="module")
def engine() -> Any:
    pytest.importorskip("llama_cpp")
    from honing.errors import ConfigurationError
    from honing.lm.local import get_engine, resolve_model_path

    try:
        return get_engine(resolve_model_path("smollm2-135m"))
    except ConfigurationError as exc:
        pytest.skip(str(exc))


LANGUAGES: list[tuple[Any, list[str], list[str]]] = [
    (str, ["hello world", "x", "ends with space ", "ünïcode ✓", 'quote " and \\'],
     ["", "two\nlines", "\tindented", "  two spaces"]),
    (int, ["0", "7", "-12", "12345678901234567890"], ["007", "1.5", "+3", "-", "one", "1 2"]),
    (float, ["1.5", "-0.25", "3", "1e-05", "2.5E+10", "0.0"], [".5", "1.", "abc", "1,5", "--1"]),
    (bool, ["True", "False"], ["true", "Yes", "TrueFalse", "1"]),
    (Intent, ["card_arrival", "card_lost", "pin_change"], ["card", "card_lost_", "Card_lost", "pin"]),
    (Literal['a "b"', "c\\d", "two\nlines"], ['a "b"', "c\\d", "two\nlines"], ["a b", "c\\\\d", "two"]),
    (Color, ["red", "green", "blue"], ["RED", "Color.RED", "purple"]),
    (Level, ["1", "2"], ["LOW", "3"]),
    (list[str], ['["a", "b"]', "[]", '["x"]', '["a\\"b"]', '[ "a" , "b" ]', '["a","b"]', '["\\u00e9"]'],
     ["['a']", '["a",  "b"]', '["a" "b"]', '["a",]', '["a"', "a, b", '["a\nb"]']),
    (list[int], ["[1, 2, 3]", "[]", "[-4]"], ["[1.5]", '["1"]', "[1 2]", "[01]"]),
    (list[Intent], ['["card_lost", "pin_change"]', "[]"], ['["card"]', "[card_lost]"]),
    (Optional[int], ["None", "5", "-1"], ["null", "none", ""]),
    (Optional[Intent], ["None", "card_lost"], ["null", "x"]),
    (dict[str, int], ['{"a": 1}', "{}", '{"a": 1, "b": -2}'], ['{"a": "b"}', "{a: 1}", '{"a": 1,}']),
    (list, ['[1, "a", {"b": [true, null, 2.5]}]', "[]"], ["[True]", "[None]"]),
    (tuple[int, str], ['[1, "a"]'], ['[1]', '["a", 1]', '[1, "a", 2]']),
]


@pytest.mark.local_lm
@pytest.mark.parametrize(("annotation", "good", "bad"), LANGUAGES,
                         ids=[str(a) for a, _, _ in LANGUAGES])
def test_grammar_admits_exactly_the_rendered_values(engine: Any, annotation: Any, good: list[str],
                                                     bad: list[str]) -> None:
    exact = value_grammar(annotation, leading_space=False, newline=False)
    spaced = value_grammar(annotation, leading_space=True, newline=False)
    optional = value_grammar(annotation)  # optional space before, optional newline after
    for text in good:
        assert engine.grammar_accepts(exact, text), (annotation, text)
        assert not engine.grammar_accepts(exact, text + "\n"), (annotation, text)
        assert engine.grammar_accepts(optional, " " + text + "\n"), (annotation, text)
        assert not engine.grammar_accepts(optional, text + "\n\n"), (annotation, text)
        assert engine.grammar_accepts(spaced, " " + text), (annotation, text)
        assert not engine.grammar_accepts(spaced, text), (annotation, text)
        assert engine.grammar_accepts(optional, text), (annotation, text)
        assert engine.grammar_accepts(optional, " " + text), (annotation, text)
        assert not engine.grammar_accepts(optional, "  " + text), (annotation, text)
    for text in bad:
        assert not engine.grammar_accepts(exact, text), (annotation, text)
        assert not engine.grammar_accepts(optional, " " + text), (annotation, text)


def _parse(annotation: Any, text: str) -> Any:
    """A strict reading of `text` as `annotation` (what the adapter's parser would accept)."""
    text = text.strip()
    if annotation is int:
        return int(text)
    if annotation is float:
        return float(text)
    if annotation is bool:
        return {"True": True, "False": False}[text]
    if annotation is Color:
        return Color(text)
    if annotation == Optional[int]:
        return None if text == "None" else int(text)
    if typing.get_origin(annotation) is Literal:
        assert text in typing.get_args(annotation), text
        return text
    if typing.get_origin(annotation) is list:
        value = json.loads(text)
        (item,) = typing.get_args(annotation)
        assert isinstance(value, list) and all(isinstance(v, item) for v in value), value
        return value
    raise AssertionError(annotation)


DECODE_CASES: list[tuple[Any, str]] = [
    (Intent, "Classify the banking query.\n\nQuery: I lost my card on the bus\nIntent:"),
    (Intent, "Write a poem about the sea.\n\nPoem:"),  # nothing in the prompt suggests the values
    (int, "Question: How many legs does a spider have?\nAnswer:"),
    (int, "Describe your favourite colour.\nDescription:"),
    (float, "Question: What is half of three?\nAnswer:"),
    (bool, "Question: Is the sky blue?\nAnswer:"),
    (Color, "Question: What colour is grass?\nColour:"),
    (Optional[int], "Question: What year did the Berlin wall fall?\nYear:"),
    (list[str], "Sentence: I bought apples and pears.\nFruits: [\"apples\", \"pears\"]\n\n"
                "Sentence: She ate a banana.\nFruits:"),
    (list[int], "Sentence: I have 3 cats and 4 dogs.\nNumbers: [3, 4]\n\n"
                "Sentence: She is 7 and he is 9.\nNumbers:"),
]


@pytest.mark.local_lm
@pytest.mark.parametrize(("annotation", "prompt"), DECODE_CASES, ids=[f"{a}-{i}" for i, (a, _) in
                                                                        enumerate(DECODE_CASES)])
def test_decoding_under_each_grammar_gives_a_value_of_the_type(engine: Any, annotation: Any,
                                                                 prompt: str) -> None:
    grammar = value_grammar(annotation)
    result = engine.complete(prompt, grammar=grammar, max_tokens=48)
    assert result["finish_reason"] == "stop", result  # the grammar completed and forced the end
    _parse(annotation, result["text"])
    assert engine.grammar_accepts(grammar, result["text"])


@pytest.mark.local_lm
def test_sampling_under_a_literal_grammar_always_yields_an_allowed_value(engine: Any) -> None:
    grammar = value_grammar(Intent)
    prompt = "Tell me a story about a dragon.\nStory:"
    for seed in range(4):
        result = engine.complete(prompt, grammar=grammar, temperature=1.5, seed=seed, max_tokens=12)
        assert result["text"].strip() in typing.get_args(Intent), result
