"""Signatures: class form, string form, supported types and their text form, immutability."""

import enum
import typing
from typing import Literal, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import honing as hn
from honing.errors import InputError, SignatureError
from honing.signatures import (
    Field,
    coerce_input,
    default_prefix,
    ensure_signature,
    make_signature,
    parse_signature,
    type_from_str,
    type_to_str,
)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Classify(hn.Signature):
    """Classify the customer's message.

    Pick the closest intent.
    """

    text: str = hn.InputField(desc="the customer's message")
    history: Optional[list[str]] = hn.InputField()
    intent: Literal["pin_blocked", "card_lost", "other"] = hn.OutputField(desc="the intent")
    urgent: bool = hn.OutputField()
    color: Color = hn.OutputField()
    confidence: float = hn.OutputField()
    count: int = hn.OutputField(prefix="How Many")


# -- class form -------------------------------------------------------------------------------------

def test_class_form_collects_fields_in_order_with_roles_types_and_descriptions():
    assert [f.name for f in Classify.input_fields] == ["text", "history"]
    assert [f.name for f in Classify.output_fields] == ["intent", "urgent", "color", "confidence", "count"]
    by_name = {f.name: f for f in Classify.fields}
    assert by_name["text"].desc == "the customer's message"
    assert by_name["text"].role == "input"
    assert by_name["intent"].role == "output"
    assert by_name["intent"].annotation == Literal["pin_blocked", "card_lost", "other"]
    assert by_name["history"].annotation == Optional[list[str]]
    assert by_name["color"].annotation is Color
    assert by_name["urgent"].annotation is bool
    assert by_name["count"].prefix == "How Many"
    assert by_name["confidence"].prefix == "Confidence"


def test_docstring_is_the_instruction_cleaned():
    assert Classify.instructions == "Classify the customer's message.\n\nPick the closest intent."


def test_missing_docstring_gives_a_default_instruction_naming_the_fields():
    class QA(hn.Signature):
        question: str = hn.InputField()
        answer: str = hn.OutputField()

    assert "`question`" in QA.instructions and "`answer`" in QA.instructions


def test_type_names_and_repr():
    by_name = {f.name: f for f in Classify.fields}
    assert by_name["intent"].type_name == "Literal['pin_blocked', 'card_lost', 'other']"
    assert by_name["history"].type_name == "Optional[list[str]]"
    assert by_name["color"].type_name == "Enum[Color: 'red', 'green']"
    assert repr(Classify).startswith("Classify(text: str, history: Optional[list[str]] -> intent: Literal[")


def test_pep604_optional_is_supported():
    class S(hn.Signature):
        x: int | None = hn.InputField()
        y: str = hn.OutputField()

    assert S.input_fields[0].type_name == "Optional[int]"


def test_subclass_inherits_fields_and_can_override_them():
    class Base(hn.Signature):
        """Base instruction."""

        q: str = hn.InputField()
        a: str = hn.OutputField()

    class Child(Base):
        """Child instruction."""

        a: int = hn.OutputField()
        ctx: list[str] = hn.InputField()

    assert {f.name: f.type_name for f in Child.fields} == {"q": "str", "a": "int", "ctx": "list[str]"}
    assert Child.instructions == "Child instruction."
    assert Base.output_fields[0].annotation is str  # the base is unchanged


def test_unannotated_marker_is_an_error():
    with pytest.raises(SignatureError, match="'answer'.*no type annotation"):
        class S(hn.Signature):
            question: str = hn.InputField()
            answer = hn.OutputField()


def test_annotation_without_marker_is_an_error():
    with pytest.raises(SignatureError, match="'answer'.*InputField"):
        class S(hn.Signature):
            question: str = hn.InputField()
            answer: str


def test_unsupported_annotation_is_an_error_naming_the_field():
    with pytest.raises(SignatureError, match="'answer'"):
        class S(hn.Signature):
            question: str = hn.InputField()
            answer: set[str] = hn.OutputField()


def test_signature_without_outputs_is_an_error():
    with pytest.raises(SignatureError, match="output"):
        class S(hn.Signature):
            question: str = hn.InputField()


@pytest.mark.parametrize("bad", [typing.Union[int, str], tuple[int, int], dict[int, str], Literal[1.5],
                                 bytes])
def test_unsupported_types_are_rejected(bad):
    with pytest.raises(SignatureError):
        type_to_str(bad)


def test_signatures_cannot_be_instantiated():
    with pytest.raises(TypeError, match="Predict"):
        Classify()


# -- immutability ------------------------------------------------------------------------------------

def test_signature_is_immutable():
    with pytest.raises(AttributeError, match="immutable"):
        Classify.instructions_extra = "x"
    with pytest.raises(AttributeError):
        Classify._instructions = "changed"
    assert Classify.instructions.startswith("Classify")


def test_fields_are_frozen():
    f = Classify.fields[0]
    with pytest.raises(AttributeError):
        f.desc = "changed"


def test_with_instructions_returns_a_new_signature_and_keeps_the_old_one():
    new = Classify.with_instructions("  Route the message.  ")
    assert new is not Classify
    assert new.instructions == "Route the message."
    assert Classify.instructions.startswith("Classify the customer's message.")
    assert new.fields == Classify.fields
    assert new.__name__ == "Classify"
    assert new != Classify
    assert new == Classify.with_instructions("Route the message.")


def test_with_fields_and_prepend_output():
    extra = Field("reasoning", "output", str, "think", "Reasoning")
    new = Classify.prepend_output(extra)
    assert [f.name for f in new.output_fields][:2] == ["reasoning", "intent"]
    assert [f.name for f in new.input_fields] == ["text", "history"]
    assert new.instructions == Classify.instructions
    assert "reasoning" not in [f.name for f in Classify.fields]
    # prepending a field that already exists moves it instead of duplicating it
    again = new.prepend_output(extra)
    assert [f.name for f in again.fields].count("reasoning") == 1


def test_equality_and_hash_are_by_value():
    a = parse_signature("q -> a")
    b = parse_signature("  q->a ")
    assert a == b and hash(a) == hash(b)
    assert {a: 1}[b] == 1
    assert a != parse_signature("q -> a: int")
    assert a != parse_signature("question -> a")


def test_make_signature_rejects_duplicates_and_bad_types():
    with pytest.raises(SignatureError, match="duplicate"):
        make_signature([Field("x", "input"), Field("x", "output")])
    with pytest.raises(SignatureError, match="'y'"):
        make_signature([Field("x", "input"), Field("y", "output", set)])


@pytest.mark.parametrize("name", ["_private", "1abc", "has space", ""])
def test_field_names_must_be_identifiers(name):
    with pytest.raises(SignatureError):
        Field(name, "input")


def test_field_role_is_validated():
    with pytest.raises(ValueError):
        Field("x", "sideways")


@pytest.mark.parametrize("name, prefix", [("question", "Question"), ("card_number", "Card Number"),
                                          ("camelCase", "Camel Case"), ("URL", "URL")])
def test_default_prefix(name, prefix):
    assert default_prefix(name) == prefix


# -- string form -------------------------------------------------------------------------------------

def test_typed_string_signature():
    sig = parse_signature("a: int, b: int -> sum: int")
    assert [(f.name, f.role, f.annotation) for f in sig.fields] == [
        ("a", "input", int), ("b", "input", int), ("sum", "output", int)]


def test_untyped_string_signature_defaults_to_str():
    sig = parse_signature("question -> answer")
    assert [(f.name, f.annotation) for f in sig.fields] == [("question", str), ("answer", str)]


def test_string_signature_with_complex_types_and_commas_inside_brackets():
    sig = parse_signature("context: list[str], q -> label: Literal['a, b', 'c'], scores: dict[str, float], "
                          "note: Optional[str]")
    ann = {f.name: f.annotation for f in sig.fields}
    assert ann["context"] == list[str]
    assert ann["label"] == Literal["a, b", "c"]
    assert ann["scores"] == dict[str, float]
    assert ann["note"] == Optional[str]


def test_string_signature_instructions():
    sig = parse_signature("q -> a", instructions="Answer briefly.")
    assert sig.instructions == "Answer briefly."


def test_ensure_signature_accepts_class_and_string_only():
    assert ensure_signature(Classify) is Classify
    assert ensure_signature("q -> a") == parse_signature("q -> a")
    with pytest.raises(SignatureError):
        ensure_signature(42)
    with pytest.raises(SignatureError):
        ensure_signature(hn.Signature)


def test_unknown_type_name_is_a_clear_error():
    with pytest.raises(SignatureError, match="unknown type name 'integer'"):
        parse_signature("a: integer -> b")
    with pytest.raises(SignatureError, match="unknown type name 'Foo'"):
        parse_signature("a -> b: list[Foo]")


@pytest.mark.parametrize("bad", [
    "q a -> b",            # space in a name
    "q -> a -> b",         # two arrows
    "q, a",                # no arrow
    "-> a",                # no inputs
    "q ->",                # no outputs
    "q, q -> a",           # duplicate
    "q -> a, a",           # duplicate output
    "1q -> a",             # not an identifier
    "q -> a: list",        # list needs arguments
    "q -> a: list[str",    # unbalanced
    "q -> a: Literal[]",   # no choices
    "q -> a: Optional[int, str]",
    "q -> a: dict[int, str]",  # keys must be str
    "q -> a: int int",
    "q -> a,",
])
def test_bad_string_signatures_raise_signature_error(bad):
    with pytest.raises(SignatureError):
        parse_signature(bad)


def test_signature_error_is_a_value_error():
    with pytest.raises(ValueError):
        parse_signature("a: nope -> b")


# -- type text form ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, annotation", [
    ("str", str), ("int", int), ("float", float), ("bool", bool),
    ("list[str]", list[str]), ("List[int]", list[int]), ("Optional[int]", Optional[int]),
    ("dict[str, int]", dict[str, int]), ("Dict[str, list[bool]]", dict[str, list[bool]]),
    ("Literal['a', 'b']", Literal["a", "b"]), ('Literal["a", "b"]', Literal["a", "b"]),
    ("Literal[yes, no]", Literal["yes", "no"]), ("Literal[1, -2]", Literal[1, -2]),
    ("Literal[True, False]", Literal[True, False]), ("  Optional[ list[ int ] ] ", Optional[list[int]]),
])
def test_type_from_str(text, annotation):
    assert type_from_str(text) == annotation


def test_enum_text_form_builds_an_equivalent_enum():
    text = type_to_str(Color)
    assert text == "Enum[Color: 'red', 'green']"
    rebuilt = type_from_str(text)
    assert issubclass(rebuilt, enum.Enum)
    assert rebuilt.__name__ == "Color"
    assert [m.value for m in rebuilt] == ["red", "green"]
    assert [m.name for m in rebuilt] == ["RED", "GREEN"]
    assert type_to_str(rebuilt) == text


@pytest.mark.parametrize("choice", ["->", "it's \"x\", y", "a]b", ":", "\\", "\\'", "a, b"])
def test_string_signature_with_tricky_literal_choices(choice):
    text = type_to_str(Literal[choice])
    sig = parse_signature(f"x -> y: {text}, z: int")
    assert [f.name for f in sig.fields] == ["x", "y", "z"]
    assert sig.fields[1].annotation == Literal[choice]


def test_literal_escapes_survive_the_text_form():
    for value in ["a\nb", "it's", 'say "hi"', "back\\slash", "tab\there", "ünïcode", "x\x00y"]:
        ann = Literal[value]
        assert type_from_str(type_to_str(ann)) == ann, value


_tricky_text = st.text(st.one_of(st.characters(), st.sampled_from(list("'\"\\,[]:->"))), max_size=8)
_literal_choices = st.one_of(
    st.lists(_tricky_text, min_size=1, max_size=4, unique=True),
    st.lists(st.integers(-10**6, 10**6), min_size=1, max_size=4, unique=True),
    st.sampled_from([[True], [False], [True, False]]),
)
_enum_values = st.one_of(
    st.lists(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), min_size=1, max_size=4, unique=True),
    st.lists(st.integers(0, 1000), min_size=1, max_size=4, unique=True),
)


def _make_enum(values):
    return enum.Enum("Gen", {f"M{i}": v for i, v in enumerate(values)})


_base_types = st.one_of(
    st.sampled_from([str, int, float, bool]),
    _literal_choices.map(lambda cs: Literal[tuple(cs)]),
)


def _extend(inner):
    return st.one_of(
        inner.map(lambda t: list[t]),
        inner.map(lambda t: dict[str, t]),
        inner.filter(lambda t: typing.get_origin(t) is not typing.Union).map(lambda t: Optional[t]),
    )


supported_types = st.recursive(_base_types, _extend, max_leaves=4)


@settings(max_examples=100, deadline=None)
@given(supported_types)
def test_type_text_round_trip(annotation):
    text = type_to_str(annotation)
    assert type_from_str(text) == annotation
    assert type_to_str(type_from_str(text)) == text


@settings(max_examples=50, deadline=None)
@given(_enum_values)
def test_enum_text_round_trip(values):
    text = type_to_str(_make_enum(values))
    rebuilt = type_from_str(text)
    assert [m.value for m in rebuilt] == values
    assert type_to_str(rebuilt) == text


@settings(max_examples=50, deadline=None)
@given(supported_types)
def test_string_signature_accepts_every_type_text(annotation):
    sig = parse_signature(f"x -> y: {type_to_str(annotation)}")
    assert sig.output_fields[0].annotation == annotation


# -- input coercion ----------------------------------------------------------------------------------

@pytest.mark.parametrize("annotation, value, expected", [
    (str, 5, "5"), (int, "12", 12), (int, 3.0, 3), (float, 2, 2.0), (float, " 2.5 ", 2.5),
    (bool, True, True), (list[int], ("1", 2), [1, 2]), (Literal["a", "b"], "b", "b"),
    (Color, "red", Color.RED), (Color, Color.GREEN, Color.GREEN), (Optional[int], None, None),
    (dict[str, int], {"a": 1}, {"a": 1}),
])
def test_coerce_input_converts(annotation, value, expected):
    assert coerce_input(Field("x", "input", annotation), value) == expected


@pytest.mark.parametrize("annotation, value", [
    (int, "twelve"), (int, True), (int, 2.5), (bool, "yes"), (float, "x"), (float, None),
    (Literal["a", "b"], "c"), (Color, "blue"), (list[int], "1,2"), (dict[str, int], [1]), (str, None),
])
def test_coerce_input_rejects_with_input_error_naming_the_field(annotation, value):
    with pytest.raises(InputError, match="'myfield'"):
        coerce_input(Field("myfield", "input", annotation), value)
