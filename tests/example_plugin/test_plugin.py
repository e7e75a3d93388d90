"""The example plugin's own tests, written the way a plugin author would with ``sftkit.testing``.

The fixtures ``sftkit_registry``, ``register_plugin`` and ``sftkit_cli`` come from the pytest
plugin that sftkit installs; the ``check_*`` functions are the conformance checks.
"""
from pathlib import Path

import pytest

import sftkit_example_plugin as plugin
from sftkit import Example, Message, Result
from sftkit.errors import DataError
from sftkit.testing import (
    check_generator,
    check_loader,
    check_masking_strategy,
    check_metric,
    check_reporter,
    check_template,
    check_validator,
    validation_context,
)

HERE = Path(__file__).parent


def test_registers_one_component_of_each_kind(register_plugin, sftkit_registry):
    status = register_plugin(plugin, name="example")
    assert sorted(status.components) == [
        "generators:one_by_one", "loaders:txt_pairs", "masking_strategies:turn_decay", "metrics:length_ratio",
        "reporters:markdown", "templates:llama2_inst", "validators:profanity",
    ]
    assert sftkit_registry.get("templates", "llama2_inst").plugin == "example"


def test_template_conforms_and_renders_llama2():
    rendered = check_template(plugin.llama2_inst)
    with_system = "".join(s.text for s in rendered[2])
    assert with_system == ("[INST] <<SYS>>\nYou are concise.\n<</SYS>>\n\nSummarise the text.\n\n"
                           "The meeting moved to Friday at noon. [/INST] Meeting: Friday, noon.</s>")


def test_masking_conforms_and_decays_earlier_turns():
    weights = check_masking_strategy(plugin.turn_decay, options={"decay": "0.25"})
    conversation = weights[3]  # the sample conversation: two assistant turns
    assert sorted(set(conversation)) == [0.0, 0.25, 1.0]


def test_loader_conforms(tmp_path):
    broken = tmp_path / "broken.txt"
    broken.write_text("Q: a question\nA: an answer\n\nan orphan line\n", encoding="utf-8")
    records = check_loader(plugin.txt_pairs, HERE / "sample.txt", malformed=broken)
    assert records[0] == {"instruction": "What is the capital of France?", "output": "Paris."}
    assert records[1]["output"].count("\n") == 2
    with pytest.raises(DataError) as caught:
        list(plugin.txt_pairs(broken))
    assert caught.value.line == 4


def test_validator_conforms_and_flags_listed_words():
    examples = [Example(instruction="Say hi", output="Hi!"),
                Example(messages=[Message("user", "x"), Message("assistant", "Damn, no.")], row=1)]
    issues = check_validator(plugin.profanity, validation_context(examples))
    assert [(i.code, i.rows) for i in issues] == [("profanity", [1])]
    assert check_validator(plugin.profanity, validation_context(examples), options={"words": "hi"})[0].rows == [0]


def test_metric_conforms():
    scores = check_metric(plugin.length_ratio, predictions=["a b", "a b c d"], references=["a b", "a b"])
    assert scores == {"length_ratio": [1.0, 2.0]}


def test_generator_conforms():
    outputs = check_generator(plugin.one_by_one)
    assert len(outputs) == 4


def test_reporter_conforms_and_escapes(tmp_path):
    written = check_reporter(plugin.markdown, tmp_path)
    assert written["validate"].name == "validate.md"
    text = written["validate"].read_text()
    assert "&lt;script&gt;" in text and "<script>" not in text


def test_through_the_cli(register_plugin, sftkit_cli, tmp_path):
    register_plugin(plugin, name="example")
    result = sftkit_cli("plugins", "--json")
    assert result.exit_code == 0, result.stderr
    names = {(c["kind"], c["name"]) for c in result.json()["components"] if c["plugin"] == "example"}
    assert ("templates", "llama2_inst") in names and ("generators", "one_by_one") in names and len(names) == 7
    report = plugin.markdown(Result("eval", "t", {"a": 1}), tmp_path)
    assert report.read_text().startswith("# t")
