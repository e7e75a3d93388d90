"""`sftkit eval` end to end on the tiny random model: reports, comparison, run folders, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "data" / "eval"
ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "demo" / "financial_sentiment" / "spec.yaml"
SENTIMENT = FIXTURES / "sentiment.jsonl"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A run folder as `sftkit train` writes it: a fresh (untrained) LoRA adapter on tiny-random."""
    from peft import LoraConfig, get_peft_model

    from sftkit.models import load_model, load_tokenizer
    from sftkit.runs import write_run
    from sftkit.spec import load_spec

    folder = tmp_path_factory.mktemp("run")
    model = get_peft_model(load_model("tiny-random"), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(folder)
    load_tokenizer("tiny-random").save_pretrained(folder)
    write_run(folder, {"sftkit_version": "test", "base_model": "tiny-random", "method": "lora", "template": "alpaca",
                       "template_options": {}, "masking": "completion_only", "masking_options": {},
                       "spec": load_spec(str(SPEC)).to_dict(),
                       "max_length": None, "added_tokens": [], "recipe": {}})
    return folder


def read(path: Path) -> dict:
    return json.loads(path.read_text("utf-8"))


def flat(text: str) -> str:
    """Terminal output with Rich's line wrapping undone."""
    return " ".join(text.split())


def test_eval_compare_same_model_writes_three_reports(run_cli, tmp_path):
    out = tmp_path / "reports"
    result = run_cli("eval", "--model", "tiny-random", "--compare", "tiny-random", "--data", SENTIMENT, "--spec", SPEC,
                     "--max-new-tokens", "4", "--report-dir", out, "--json", tmp_path / "copy.json",
                     "--resamples", "200")
    assert result.exit_code == 0, result.stderr
    data = read(out / "eval.json")
    assert read(tmp_path / "copy.json") == data
    assert data["rows"] == 6 and data["task"] == "classification" and data["template"] == "alpaca"
    assert set(data["models"]) == {"base", "tuned"}
    assert list(data["metrics"]) == ["accuracy", "f1_macro", "f1_weighted", "exact_match"]
    for entry in data["metrics"].values():
        # the same model twice: identical outputs, a zero difference that is not significant
        assert entry["base"] == entry["tuned"]
        assert entry["difference"]["value"] == 0 and entry["difference"]["p_value"] == 1.0
        assert entry["tuned"]["low"] <= entry["tuned"]["value"] <= entry["tuned"]["high"]
    assert data["metric_info"]["exact_match"]["mode"] == "normalised"
    assert data["bootstrap"]["resamples"] == 200
    example = data["examples"][0]
    assert example["prompt"].endswith("### Response:\n") and example["reference"] == "negative"
    assert example["outputs"]["base"] == example["outputs"]["tuned"]
    assert example["outputs"]["tuned"]["stopped"] in ("eos", "end_of_turn", "max_new_tokens")
    assert set(example["scores"]["tuned"]) == {"accuracy", "f1_macro", "f1_weighted", "exact_match"}
    assert example["change"]["accuracy"] == 0
    # the random model's outputs map to no label: counted wrong, listed, and warned about
    summary = data["classification"]["models"]["tuned"]
    assert summary["columns"] == ["positive", "negative", "neutral", "(invalid)"]
    assert sum(map(sum, summary["confusion"])) == 6
    assert len(data["classification"]["invalid"]["tuned"]) == summary["invalid"]
    codes = {w["code"] for w in data["warnings"]}
    assert "hit_max_new_tokens" in codes
    # terminal: the table, the headline, and the paths
    assert "accuracy" in result.stdout and "tuned - base" in result.stdout
    assert "accuracy: base" in result.stdout and "within the noise" in flat(result.stdout)
    html = (out / "eval.html").read_text("utf-8")
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert 'id="examples-table"' in html and "change (accuracy)" in html and "(invalid)" in html


def test_eval_of_a_run_folder_compares_with_its_base_model(run_cli, lora_run, tmp_path):
    # no --spec: the run's own spec (as `sftkit train` saved it) reads the data
    result = run_cli("eval", "--model", lora_run, "--data", SENTIMENT, "--max-new-tokens", "3",
                     "--limit", "3", "--report-dir", tmp_path, "--resamples", "100")
    assert result.exit_code == 0, result.stderr
    data = read(tmp_path / "eval.json")
    assert data["spec_note"].endswith("(from the run folder)") and data["task"] == "classification"
    # the spec's constant instruction (its instruction column removed) is in every prompt
    assert all("### Instruction:\nClassify the sentiment" in e["prompt"] for e in data["examples"])
    assert data["models"]["base"]["name"] == "tiny-random"  # the default --compare of a run folder
    assert data["models"]["tuned"]["run"]["method"] == "lora"
    assert data["rows"] == 3 and data["limit"] == 3
    assert not [w for w in data["warnings"] if w["code"] == "template_differs"]
    # an untrained LoRA adapter (B = 0) changes nothing: the same tokens as its base model
    for example in data["examples"]:
        assert example["outputs"]["tuned"] == example["outputs"]["base"]


def test_another_template_than_the_runs_is_warned_about(run_cli, lora_run, tmp_path):
    result = run_cli("eval", "--model", lora_run, "--data", SENTIMENT, "--template", "chatml", "--no-compare",
                     "--max-new-tokens", "2", "--limit", "2", "--report-dir", tmp_path, "--resamples", "100")
    assert result.exit_code == 0, result.stderr
    data = read(tmp_path / "eval.json")
    assert data["template"] == "chatml" and set(data["models"]) == {"tuned"}
    assert [w["code"] for w in data["warnings"]][0] == "template_differs"
    assert "trained with template 'alpaca'" in flat(result.stderr)


def test_summarization_metrics_and_bleu_signature(run_cli, tmp_path):
    result = run_cli("eval", "--model", "tiny-random", "--data", FIXTURES / "dialogues.jsonl", "--spec", "dialogsum",
                     "--max-new-tokens", "6", "--report-dir", tmp_path, "--resamples", "100",
                     "--metric-option", "rouge.tokenizer=whitespace", "--metric-option", "bleu.tokenize=intl")
    assert result.exit_code == 0, result.stderr
    data = read(tmp_path / "eval.json")
    assert data["task"] == "summarization" and set(data["models"]) == {"tuned"}
    assert list(data["metrics"]) == ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"]
    assert data["metrics"]["bleu"]["aggregate"] == "corpus" and "difference" not in data["metrics"]["bleu"]
    assert "tok:intl" in data["metric_info"]["bleu"]["signature"]
    assert data["metric_info"]["rouge"]["tokenizer"] == "whitespace"
    assert "classification" not in data


@pytest.mark.parametrize("args, message", [
    (["--metrics", "accuracy,bleurt"], "unknown metric 'bleurt'"),
    (["--metric-option", "rouge.tokenizer=char"], "names metric(s) not being computed: rouge"),
    (["--metric-option", "tokenizer=char"], "name the metric"),
    (["--metrics", "rouge", "--metric-option", "rouge.tokeniser=char"], "has no option 'tokeniser'"),
    (["--compare", "tiny-random", "--no-compare"], "exclude each other"),
])
def test_bad_options_exit_2_before_any_model_loads(run_cli, args, message):
    result = run_cli("eval", "--model", "no-such-model-anywhere", "--data", SENTIMENT, "--spec", SPEC, *args)
    assert result.exit_code == 2
    assert message in flat(result.stderr) and "Traceback" not in result.stderr


def test_a_reference_outside_the_labels_names_the_row(run_cli, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"sentence": "Fine.", "label": "neutral"}\n{"sentence": "Odd.", "label": "bullish"}\n', "utf-8")
    result = run_cli("eval", "--model", "no-such-model-anywhere", "--data", data, "--spec", SPEC)
    assert result.exit_code == 2
    assert "row 1" in flat(result.stderr) and "'bullish'" in result.stderr and "field 'label'" in flat(result.stderr)


def test_a_missing_data_file_exits_2(run_cli, tmp_path):
    result = run_cli("eval", "--model", "tiny-random", "--data", tmp_path / "nope.jsonl", "--spec", SPEC)
    assert result.exit_code == 2 and "nope.jsonl: no such file" in flat(result.stderr)
