"""Example and Prediction: mapping and attribute access, inputs and labels, equality, JSON, copies."""

import copy
import json
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import honing as hn
from honing.errors import InputError


def make():
    return hn.Example(question="What is 2+2?", answer="4", source="unit").with_inputs("question")


def test_attribute_and_key_access():
    ex = make()
    assert ex.question == "What is 2+2?"
    assert ex["answer"] == "4"
    assert len(ex) == 3
    assert list(ex) == ["question", "answer", "source"]
    assert dict(ex) == {"question": "What is 2+2?", "answer": "4", "source": "unit"}
    assert "answer" in ex and "missing" not in ex
    assert ex.get("missing", 7) == 7


def test_missing_attribute_names_the_field_and_lists_the_present_ones():
    with pytest.raises(AttributeError, match=r"'missing'.*question, answer, source"):
        make().missing
    with pytest.raises(KeyError):
        make()["missing"]


def test_examples_are_read_only():
    ex = make()
    with pytest.raises(AttributeError, match="read-only"):
        ex.answer = "5"
    with pytest.raises(TypeError):
        ex["answer"] = "5"
    assert ex.answer == "4"


def test_constructor_merges_a_base_mapping_and_keywords():
    ex = hn.Example({"a": 1, "b": 2}, b=3, c=4)
    assert dict(ex) == {"a": 1, "b": 3, "c": 4}


def test_constructor_from_an_example_keeps_its_input_keys():
    ex = hn.Example(make(), answer="four")
    assert ex.answer == "four"
    assert ex.input_keys == frozenset({"question"})


def test_non_string_keys_are_rejected():
    with pytest.raises(InputError):
        hn.Example({1: "x"})


def test_with_inputs_marks_inputs_and_returns_a_new_example():
    raw = hn.Example(question="q", answer="a")
    marked = raw.with_inputs("question")
    assert raw.input_keys is None
    assert marked.input_keys == frozenset({"question"})
    assert marked is not raw


def test_with_inputs_rejects_unknown_keys_naming_them():
    with pytest.raises(InputError, match="'nope'"):
        hn.Example(question="q").with_inputs("question", "nope")


def test_inputs_and_labels():
    ex = make()
    assert dict(ex.inputs()) == {"question": "What is 2+2?"}
    assert dict(ex.labels()) == {"answer": "4", "source": "unit"}
    assert ex.inputs().input_keys == frozenset({"question"})


def test_inputs_without_with_inputs_is_a_clear_error():
    with pytest.raises(InputError, match="with_inputs"):
        hn.Example(question="q").inputs()


def test_labels_without_inputs_are_everything():
    assert dict(hn.Example(a=1, b=2).labels()) == {"a": 1, "b": 2}


def test_copy_and_without():
    ex = make()
    changed = ex.copy(answer="four")
    assert changed.answer == "four" and ex.answer == "4"
    assert changed.input_keys == ex.input_keys
    smaller = ex.without("source", "question")
    assert dict(smaller) == {"answer": "4"}
    assert smaller.input_keys == frozenset()


def test_equality_is_by_value():
    assert make() == make()
    assert make() == {"question": "What is 2+2?", "answer": "4", "source": "unit"}
    assert make() != make().copy(answer="5")
    assert hash(make()) == hash(make())
    assert len({make(), make()}) == 1
    assert make() != 42


def test_to_dict_is_a_plain_copy():
    ex = make()
    d = ex.to_dict()
    d["answer"] = "changed"
    assert ex.answer == "4"
    assert ex.toDict() == ex.to_dict() == dict(ex)


def test_repr_shows_fields_and_inputs():
    assert repr(make()) == ("Example(question='What is 2+2?', answer='4', source='unit', "
                            "inputs=['question'])")


def test_json_round_trip_keeps_values_and_inputs():
    ex = make()
    raw = ex.to_json()
    assert raw == {"data": {"question": "What is 2+2?", "answer": "4", "source": "unit"},
                   "inputs": ["question"]}
    back = hn.Example.from_json(json.loads(json.dumps(raw)))
    assert back == ex
    assert back.input_keys == ex.input_keys


def test_json_round_trip_without_inputs():
    ex = hn.Example(a=1)
    back = hn.Example.from_json(json.loads(json.dumps(ex.to_json())))
    assert back == ex and back.input_keys is None


@pytest.mark.parametrize("bad", [None, [], {}, {"data": [1, 2]}, {"inputs": ["a"]}])
def test_from_json_rejects_malformed_records(bad):
    with pytest.raises(InputError):
        hn.Example.from_json(bad)


def test_from_json_with_unknown_input_key_is_an_input_error():
    with pytest.raises(InputError, match="'b'"):
        hn.Example.from_json({"data": {"a": 1}, "inputs": ["b"]})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def examples(draw):
    data = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
    ex = hn.Example(data)
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(sorted(data)), unique=True)) if data else []
        ex = ex.with_inputs(*keys)
    return ex


@settings(max_examples=60, deadline=None)
@given(examples())
def test_json_round_trip_property(ex):
    back = hn.Example.from_json(json.loads(json.dumps(ex.to_json())))
    assert back == ex
    assert dict(back) == dict(ex)
    assert list(back) == list(ex)
    assert back.input_keys == ex.input_keys
    if ex.input_keys is not None:
        assert back.inputs() == ex.inputs() and back.labels() == ex.labels()


@settings(max_examples=25, deadline=None)
@given(examples())
def test_pickle_and_deepcopy_round_trip_property(ex):
    for back in (pickle.loads(pickle.dumps(ex)), copy.deepcopy(ex), copy.copy(ex)):
        assert back == ex and back.input_keys == ex.input_keys


def test_deepcopy_copies_values():
    ex = hn.Example(items=[1, 2], q="x").with_inputs("q")
    deep = copy.deepcopy(ex)
    assert deep == ex and deep.input_keys == ex.input_keys
    assert deep["items"] is not ex["items"]
    assert copy.copy(ex)["items"] is ex["items"]


# -- Prediction ----------------------------------------------------------------------------------------

def test_prediction_is_an_example_with_meta():
    pred = hn.Prediction.from_outputs({"answer": "4"}, {"raw": "4\n"})
    assert isinstance(pred, hn.Example)
    assert pred.answer == "4"
    assert pred.meta == {"raw": "4\n"}
    assert pred == hn.Example(answer="4")
    assert hn.Prediction(answer="4").meta == {}


def test_prediction_meta_is_per_instance():
    a, b = hn.Prediction(x=1), hn.Prediction(x=1)
    a.meta["k"] = 1
    assert b.meta == {}


def test_prediction_copies_and_pickles_with_meta():
    pred = hn.Prediction.from_outputs({"answer": "4"}, {"raw": "4"})
    for back in (copy.copy(pred), copy.deepcopy(pred), pickle.loads(pickle.dumps(pred))):
        assert type(back) is hn.Prediction
        assert back == pred
        assert back.meta == {"raw": "4"}
    assert copy.deepcopy(pred).meta is not pred.meta


def test_prediction_is_read_only():
    with pytest.raises(AttributeError):
        hn.Prediction(x=1).x = 2
