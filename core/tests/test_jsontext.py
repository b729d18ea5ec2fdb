"""The bracket scanner shared by the adapters and the loader."""

from honing.jsontext import first_json, nesting_depth


def test_first_json_skips_prose_and_brackets_inside_strings():
    text = 'Sure! ```json\n{"a": "x}]", "b": [1, {"c": 2}]}\n``` hope that helps {"d": 1}'
    assert first_json(text) == '{"a": "x}]", "b": [1, {"c": 2}]}'


def test_first_json_handles_escaped_quotes_and_unclosed_objects():
    assert first_json(r'{"a": "say \"}\" now"} tail') == r'{"a": "say \"}\" now"}'
    assert first_json('prefix [1, 2') == "[1, 2"
    assert first_json("no json here") == "no json here"


def test_nesting_depth_counts_only_structure():
    assert nesting_depth('{"a": [[1], {"b": []}]}') == 4
    assert nesting_depth('"[[[[" ') == 0
    assert nesting_depth("[" * 50 + "]" * 50) == 50
    assert nesting_depth("") == 0
