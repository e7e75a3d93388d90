"""Dataset specs: built-ins, detection, overrides, mapping and clear errors."""
from __future__ import annotations

import pytest

from conftest import FIXTURES
from sftkit.errors import DataError, UsageError
from conftest import open_examples
from sftkit.spec import builtin_spec_names, detect_format, load_spec, resolve_spec, spec_from_dict

FIX = FIXTURES / "fixtures"


def test_every_builtin_spec_loads_and_covers_every_format():
    specs = {name: load_spec(name) for name in builtin_spec_names()}
    assert {s.format for s in specs.values()} == {"alpaca", "instruction_response", "prompt_completion",
                                                  "messages", "sharegpt", "text"}
    assert specs["financial_phrasebank"].labels == ["positive", "negative", "neutral"]
    assert specs["financial_phrasebank"].task == "classification"


@pytest.mark.parametrize("record,expected", [
    ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
    ({"messages": [{"role": "user", "content": "x"}]}, "messages"),
    ({"conversations": [{"from": "human", "value": "x"}]}, "sharegpt"),
    ({"prompt": "a", "completion": "b"}, "prompt_completion"),
    ({"instruction": "a", "response": "b"}, "instruction_response"),
    ({"text": "a"}, "text"),
    ({"label": "x", "content": "y"}, None),
])
def test_detect_format(record, expected):
    assert detect_format(record) == expected


def test_undetectable_columns_give_a_usage_error_with_a_hint():
    with pytest.raises(UsageError) as info:
        resolve_spec(None, {"label": "x", "content": "y"})
    assert "label, content" in str(info.value) and "--spec" in info.value.hint


def test_column_and_instruction_overrides_map_a_csv():
    spec, note, examples = open_examples(FIX / "sentiment_small.csv", columns=["input=content", "output=label"],
                                        instruction="Classify.")
    examples = list(examples)
    assert [e.output for e in examples] == ["positive", "negative", "neutral"]
    assert examples[1].input == 'Sales fell sharply, and "margins" shrank .'
    assert all(e.instruction == "Classify." for e in examples)
    assert "instruction" not in spec.columns


def test_sharegpt_and_messages_map_to_turns():
    _, _, examples = open_examples(FIX / "sharegpt_small.json")
    example = next(examples)
    assert [(m.role, m.content) for m in example.turns()] == [("user", "Tell me a colour"), ("assistant", "Blue")]
    _, _, chats = open_examples(FIX / "chat_small.jsonl")
    chat = next(chats)
    assert [m.role for m in chat.turns()] == ["system", "user", "assistant", "user", "assistant"]
    assert chat.response_text() == "4"


def test_mapping_problems_are_recorded_not_raised():
    spec = load_spec("alpaca")
    example = spec.to_example({"instruction": 3, "output": None}, row=7)
    codes = sorted(code for code, _, _ in example.meta["problems"])
    assert codes == ["missing_field", "wrong_type"]
    assert example.row == 7 and example.instruction == "3"
    chat = load_spec("messages").to_example({"messages": [{"role": "wizard", "content": "hi"}]}, row=0)
    assert chat.meta["problems"][0][0] == "unknown_role"


def test_spec_errors_name_the_key_and_suggest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nformt: alpaca\n")
    with pytest.raises(DataError) as info:
        load_spec(str(path))
    assert "formt" in str(info.value) and info.value.hint == "did you mean 'format'?"
    with pytest.raises(DataError, match="unknown task"):
        spec_from_dict({"format": "alpaca", "task": "poetry"})
    with pytest.raises(UsageError, match="unknown spec"):
        load_spec("no_such_spec")


def test_yaml_alias_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text('a: &a ["x","x"]\nb: &b [*a,*a]\nc: [*b,*b]\n')
    with pytest.raises(DataError, match="aliases"):
        load_spec(str(path))


def test_to_dict_roundtrips_removed_columns_and_constants():
    for name in builtin_spec_names():
        spec = load_spec(name)
        again = spec_from_dict(spec.to_dict(), spec.source)
        assert again == spec, name
    demo = load_spec("financial_phrasebank")
    assert demo.to_dict()["columns"]["instruction"] is None
    again = spec_from_dict(demo.to_dict())
    example = again.to_example({"label": "positive", "content": "Profit rose."}, row=0)
    assert example.instruction == demo.instruction and example.input == "Profit rose."
