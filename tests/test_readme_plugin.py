"""A plugin written from the README alone (tests/readme_plugin/): it passes the conformance
checks, runs through the command line, its reporter switches off with ``--no-reporter`` (no
``SFTKIT_LOAD_PLUGINS``), and a model trained with its system-option template saves a chat
template that renders the training prompt, system prompt included.

The plugin is registered in-process (the ``register_plugin`` fixture, as an installed plugin
is); tests/test_example_plugin.py covers pip-installing a plugin.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from sftkit.testing import (check_metric, check_reporter, check_template, check_validator, sample_examples, sample_results,
                            validation_context)

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "readme_plugin"))
import sftkit_readme_plugin as plugin  # noqa: E402

DATA = HERE / "data" / "train" / "qa.jsonl"
SYSTEM = 'Answer in one word. Never say "maybe" {or} {{this}} 😀.'


def records() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]


# -- conformance ---------------------------------------------------------------------------------

def test_template_conforms_with_and_without_its_system_option(tokenizer):
    plain = check_template(plugin.user_bot, tokenizer=tokenizer)
    assert "".join(s.text for s in plain[1]) == f"User: Name a primary colour. Bot: Red.{tokenizer.eos_token}\n"
    with_system = check_template(plugin.user_bot, tokenizer=tokenizer, options={"system": SYSTEM})
    assert "".join(s.text for s in with_system[1]).startswith(f"System: {SYSTEM}\nUser: Name a primary colour.")
    # the example's own system turn is used when the option is not set
    assert "".join(s.text for s in plain[2]).startswith("System: You are concise.\nUser: Summarise the text.")


def test_the_template_jinja_follows_the_option(tokenizer):
    """The Jinja form is a function of the options: a fixed string would lose the system prompt."""
    from sftkit.runs import chat_messages, template_jinja
    from sftkit.testing import fresh_registry

    registry = fresh_registry()
    registry.add_plugin(plugin, name="readme", version="test", builtin=False)
    bound = registry.resolve("templates", "user_bot", {"system": SYSTEM})
    jinja = template_jinja(bound)
    assert json.dumps(SYSTEM, ensure_ascii=False) in jinja
    assert template_jinja(registry.resolve("templates", "user_bot")) == plugin._jinja("")
    example = sample_examples()[1]
    saved = tokenizer.chat_template
    try:
        tokenizer.chat_template = jinja
        prompt = tokenizer.apply_chat_template(chat_messages(example), tokenize=False, add_generation_prompt=True)
    finally:
        tokenizer.chat_template = saved
    assert prompt == f"System: {SYSTEM}\nUser: Name a primary colour. Bot:"


def test_validator_conforms_and_counts_long_answers(tokenizer):
    context = validation_context(records=records(), tokenizer=tokenizer)
    issues = check_validator(plugin.answer_length, context, options={"max_words": "1"})
    expected = [i for i, r in enumerate(records()) if len(r["output"].split()) > 1]
    assert expected and [(i.code, i.rows) for i in issues] == [("long_answer", expected)]
    assert context.stats["answer_length"]["too_long"] == len(expected)


def test_chrf_metric_conforms_and_its_bootstrap_equals_corpus_chrf():
    from sacrebleu.metrics import CHRF

    import numpy as np

    scores = check_metric(plugin.chrf)
    assert set(scores) == {"chrf"}
    predictions, references = ["the cat sat", "a dog ran off", ""], ["the cat sat down", "the dog ran", "x"]
    indices = np.array([[0, 0, 1], [2, 1, 1], [0, 1, 2]])
    got = plugin.chrf.resampled(predictions, references, indices)["chrf"]
    for r, rows in enumerate(indices):
        assert got[r] == pytest.approx(CHRF().corpus_score([predictions[i] for i in rows],
                                                           [[references[i] for i in rows]]).score)


def test_csv_reporter_conforms(tmp_path):
    written = check_reporter(plugin.csv_report, tmp_path)
    assert {k: p.name for k, p in written.items() if p} == {"validate": "validate.csv", "train": "train.csv",
                                                            "eval": "eval.csv"}
    rows = list(csv.reader((tmp_path / "eval.csv").open(encoding="utf-8")))
    last_eval = [r for r in sample_results() if r.kind == "eval"][-1]  # check_reporter writes each in turn
    assert rows[0][:2] == ["row", "reference"]
    assert [c.split(":")[0] for c in rows[0][2:] if c.endswith(":output")] == list(last_eval.data["models"])


# -- through the command line ---------------------------------------------------------------------

@pytest.fixture
def cli(register_plugin, sftkit_cli):
    register_plugin(plugin, name="readme")
    return sftkit_cli


def _validate(cli, reports: Path, *extra):
    return cli("validate", DATA, "--template", "user_bot", "--template-option", f"system={SYSTEM}",
               "--model", "tiny-random", "--report-dir", reports, *extra)


def test_validate_runs_the_plugin_and_its_reporter_switches_off(cli, tmp_path):
    on = _validate(cli, tmp_path / "on", "--validator-option", "answer_length.max_words=1")
    assert on.exit_code in (0, 1), on.stderr
    assert sorted(p.name for p in (tmp_path / "on").iterdir()) == ["validate.csv", "validate.html", "validate.json"]
    data = json.loads((tmp_path / "on" / "validate.json").read_text())
    assert data["schema_version"] == 1
    codes = {(i["validator"], i["code"]) for i in data["issues"]}
    assert ("answer_length", "long_answer") in codes
    # markers declared as they appear in context: no marker_split on the " Bot:" format
    assert not [i for i in data["issues"] if i["code"] == "marker_split"]
    table = list(csv.DictReader((tmp_path / "on" / "validate.csv").open(encoding="utf-8")))
    assert {(r["validator"], r["code"]) for r in table} == codes

    off = _validate(cli, tmp_path / "off", "--no-reporter", "csv")
    assert off.exit_code in (0, 1), off.stderr
    assert sorted(p.name for p in (tmp_path / "off").iterdir()) == ["validate.html", "validate.json"]
    only = _validate(cli, tmp_path / "only", "--reporter", "csv")
    assert only.exit_code in (0, 1), only.stderr
    assert sorted(p.name for p in (tmp_path / "only").iterdir()) == ["validate.csv"]


def test_an_unknown_reporter_exits_2_before_any_work(cli, tmp_path):
    result = _validate(cli, tmp_path / "r", "--reporter", "csv,pdf")
    assert result.exit_code == 2
    assert "unknown reporter 'pdf'; available: csv, html, json" in result.stderr
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())


@pytest.mark.slow
def test_train_with_the_system_option_saves_a_matching_chat_template_then_eval_with_chrf(cli, tmp_path):
    from transformers import AutoTokenizer

    from sftkit.pipeline import Encoder
    from sftkit.runs import chat_messages
    from sftkit.schemas import validate_result
    from sftkit.spec import examples_from_records, load_spec

    run = tmp_path / "run"
    trained = cli("train", "--data", DATA, "--model", "tiny-random", "--template", "user_bot",
                  "--template-option", f"system={SYSTEM}", "--max-steps", "2", "--no-validate",
                  "--output-dir", run, "--no-reporter", "html")
    assert trained.exit_code == 0, trained.stderr
    assert "has no Jinja form" not in trained.stderr
    assert {"train.json", "train.csv"} <= {p.name for p in run.iterdir()} and not (run / "train.html").exists()
    steps = list(csv.DictReader((run / "train.csv").open(encoding="utf-8")))
    assert [int(s["step"]) for s in steps] == [1, 2]
    validate_result("train", json.loads((run / "train.json").read_text()))

    saved = AutoTokenizer.from_pretrained(str(run))
    encoder = Encoder.build(template="user_bot", tokenizer=saved, template_options={"system": SYSTEM})
    for example in examples_from_records(iter(records()), load_spec("alpaca")):
        prompt = saved.apply_chat_template(chat_messages(example), tokenize=False, add_generation_prompt=True)
        assert prompt == encoder.prompt(example)  # the training prompt, exactly
        assert prompt.startswith(f"System: {SYSTEM}\nUser: ")

    out = tmp_path / "eval"
    evaluated = cli("eval", "--model", run, "--data", DATA, "--metrics", "chrf", "--max-new-tokens", "4",
                    "--resamples", "100", "--report-dir", out, "--limit", "4")
    assert evaluated.exit_code == 0, evaluated.stderr
    report = json.loads((out / "eval.json").read_text())
    validate_result("eval", report)
    assert report["template_options"] == {"system": SYSTEM}  # eval rendered with the run's options
    assert report["examples"][0]["prompt"].startswith(f"System: {SYSTEM}\n")
    assert report["metrics"]["chrf"]["aggregate"] == "corpus"
    assert "signature" in report["metric_info"]["chrf"]
    rows = list(csv.DictReader((out / "eval.csv").open(encoding="utf-8")))
    assert len(rows) == 4 and {"tuned:output", "tuned:chrf", "base:output", "base:chrf"} <= set(rows[0])
