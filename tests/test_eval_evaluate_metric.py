"""The built-in `evaluate` metric: a local Hugging Face evaluate module (tests/data/evaluate_metric)
as a sftkit metric, offline; a hub name exits 2 with one message."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
MODULE = HERE / "data" / "evaluate_metric" / "char_overlap"
DIALOGUES = HERE / "data" / "eval" / "dialogues.jsonl"


def overlap(prediction: str, reference: str) -> float:
    return len(set(prediction) & set(reference)) / max(len(set(reference)), 1)


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """tiny-random with seeded larger weights, saved: its outputs are varied text, not empty."""
    from sftkit.models import load_tokenizer
    from sftkit.testing import varied_tiny_model

    folder = tmp_path_factory.mktemp("varied")
    varied_tiny_model(seed=4).save_pretrained(folder)
    load_tokenizer("tiny-random").save_pretrained(folder)
    return folder


def test_per_example_lists_and_corpus_numbers(run_cli, tmp_path, varied):
    result = run_cli("eval", "--model", varied, "--no-compare", "--data", DIALOGUES, "--spec", "dialogsum",
                     "--metrics", "evaluate", "--metric-option", f"evaluate.path={MODULE}", "--max-new-tokens", "6",
                     "--resamples", "100", "--report-dir", tmp_path)
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "eval.json").read_text("utf-8"))
    assert list(data["metrics"]) == ["char_overlap.overlap", "char_overlap.length_ratio"]
    predictions = [e["outputs"]["tuned"]["text"] for e in data["examples"]]
    references = [e["reference"] for e in data["examples"]]
    # per example: the module's list, aggregated as the mean
    expected = [overlap(p, r) for p, r in zip(predictions, references)]
    assert [e["scores"]["tuned"]["char_overlap.overlap"] for e in data["examples"]] == pytest.approx(expected)
    entry = data["metrics"]["char_overlap.overlap"]
    assert entry["aggregate"] == "mean" and entry["tuned"]["value"] == pytest.approx(np.mean(expected))
    # a single number: the corpus aggregate, with an interval from resamples
    corpus = data["metrics"]["char_overlap.length_ratio"]
    assert corpus["aggregate"] == "corpus"
    assert corpus["tuned"]["value"] == pytest.approx(sum(map(len, predictions)) / sum(map(len, references)))
    assert corpus["tuned"]["low"] <= corpus["tuned"]["value"] <= corpus["tuned"]["high"]
    assert corpus["tuned"]["value"] > 0 and corpus["tuned"]["low"] < corpus["tuned"]["high"]
    # ... and per example the module on that example alone
    assert [e["scores"]["tuned"]["char_overlap.length_ratio"] for e in data["examples"]] == pytest.approx(
        [len(p) / max(len(r), 1) for p, r in zip(predictions, references)])
    assert data["metric_info"]["evaluate"]["module"] == str(MODULE.resolve())


def test_a_script_path_works_too():
    from sftkit.plugins.metrics.evaluate_metric import evaluate_module

    scores = evaluate_module(["abc", "x"], ["abd", "xyz"], path=str(MODULE / "char_overlap.py"))
    assert scores["char_overlap.overlap"] == pytest.approx([2 / 3, 1 / 3])


@pytest.mark.parametrize("path, message", [
    ("rouge", "is not a local folder or script, and sftkit loads no evaluate module from the hub"),
    (str(HERE / "data"), "holds no module script"),
])
def test_a_hub_name_or_a_folder_without_a_module_exits_2_before_any_model_loads(run_cli, path, message):
    result = run_cli("eval", "--model", "no-such-model-anywhere", "--data", DIALOGUES, "--spec", "dialogsum",
                     "--metrics", "evaluate", "--metric-option", f"evaluate.path={path}")
    assert result.exit_code == 2, result.stderr
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr


def test_without_a_path_it_says_how_to_give_one(run_cli):
    result = run_cli("eval", "--model", "no-such-model-anywhere", "--data", DIALOGUES, "--spec", "dialogsum",
                     "--metrics", "evaluate")
    assert result.exit_code == 2 and "evaluate.path=" in " ".join(result.stderr.split())
