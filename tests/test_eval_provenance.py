"""eval.json records how it was made (per model: template, options, system prompt, generation,
generator, prompt hashes, data hash and rows, sftkit version), and `sftkit eval --diff A B`
pairs two results only when their prompt sets match."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
DIALOGUES = HERE / "data" / "eval" / "dialogues.jsonl"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Three results: tiny-random and a seeded variant on the same rows, and the variant on fewer rows."""
    from sftkit.models import load_tokenizer
    from sftkit.testing import run_cli, varied_tiny_model

    root = tmp_path_factory.mktemp("prov")
    variant = root / "variant"
    varied_tiny_model(seed=9).save_pretrained(variant)
    load_tokenizer("tiny-random").save_pretrained(variant)
    rows = [{"instruction": f"Repeat: word{i}", "input": "", "output": f"word{i}"} for i in range(12)]
    data = root / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = root / "spec.yaml"
    spec.write_text("name: rows\nformat: alpaca\nsystem: Be brief.\n", encoding="utf-8")
    out = {}
    for name, model, extra in (("a", "tiny-random", []), ("b", variant, []), ("c", variant, ["--limit", "8"])):
        result = run_cli("eval", "--model", model, "--no-compare", "--data", data, "--spec", spec,
                         "--template", "custom", "--template-option", "prompt=System: {system}\nQ: {instruction}\nA: ",
                         "--metrics", "rouge,bleu", "--max-new-tokens", "4",
                         "--resamples", "300", "--seed", "3", "--report-dir", root / name, *extra)
        assert result.exit_code == 0, result.stderr
        out[name] = root / name / "eval.json"
    return root, data, out


def read(path: Path) -> dict:
    return json.loads(path.read_text("utf-8"))


def test_each_model_records_how_it_was_made(results):
    from sftkit import __version__

    _root, data_path, out = results
    data = read(out["a"])
    made = data["models"]["tuned"]["provenance"]
    hashes = [hashlib.sha256(e["prompt"].encode("utf-8")).hexdigest() for e in data["examples"]]
    assert [e["prompt_sha256"] for e in data["examples"]] == hashes
    assert made["prompt_set_sha256"] == hashlib.sha256("".join(h + "\n" for h in hashes).encode()).hexdigest()
    assert made["data_sha256"] == hashlib.sha256(data_path.read_bytes()).hexdigest()
    assert made["data_rows"] == 12 and made["prompts"] == 12
    # the template's options resolved: the one set, and the defaults of the others
    assert made["template"] == "custom" and made["template_options"]["prompt"] == "System: {system}\nQ: {instruction}\nA: "
    assert made["template_options"]["response"] == "{output}" and "end" in made["template_options"]
    assert made["system_prompt"] == "Be brief." and "Be brief." in data["examples"][0]["prompt"]
    assert made["generator"] == "hf" and made["generator_version"].startswith("transformers ")
    assert made["generation"]["max_new_tokens"] == 4 and made["sftkit_version"] == __version__
    limited = read(out["c"])["models"]["tuned"]["provenance"]
    assert limited["data_rows"] == 12 and limited["prompts"] == 8  # the file's rows, not only those evaluated
    assert limited["prompt_set_sha256"] != made["prompt_set_sha256"]


def test_diff_of_the_same_prompts_gives_the_paired_difference(run_cli, results, tmp_path):
    _root, _data, out = results
    result = run_cli("eval", "--diff", out["a"], out["b"], "--json", tmp_path / "diff.json")
    assert result.exit_code == 0, result.stderr
    diff = read(tmp_path / "diff.json")
    assert diff["paired"] is True
    a, b = read(out["a"]), read(out["b"])
    rows = {(r["model"], r["metric"]): r for r in diff["rows"]}
    row = rows[("tuned", "rouge1")]
    assert row["a"] == a["metrics"]["rouge1"]["tuned"] and row["b"] == b["metrics"]["rouge1"]["tuned"]
    sa = np.array([e["scores"]["tuned"]["rouge1"] for e in a["examples"]])
    sb = np.array([e["scores"]["tuned"]["rouge1"] for e in b["examples"]])
    indices = np.random.default_rng(3).integers(0, len(sa), size=(300, len(sa)))  # A's seed and resamples
    observed = sb.mean() - sa.mean()
    diffs = sb[indices].mean(axis=1) - sa[indices].mean(axis=1)
    assert row["difference"]["value"] == pytest.approx(observed)
    assert row["difference"]["p_value"] == pytest.approx(
        min(1.0, (1 + np.sum(np.abs(diffs - observed) >= abs(observed))) / 301))
    assert rows[("tuned", "bleu")]["difference"] is None  # corpus BLEU: side by side only
    assert "B - A" in result.stdout and "the same prompts" in " ".join(result.stdout.split())


def test_diff_of_different_prompts_refuses_paired_figures_and_shows_both(run_cli, results, tmp_path):
    _root, _data, out = results
    result = run_cli("eval", "--diff", out["b"], out["c"], "--json", tmp_path / "diff.json")
    assert result.exit_code == 0, result.stderr
    diff = read(tmp_path / "diff.json")
    assert diff["paired"] is False and "prompt sets differ" in diff["why"]
    assert all(r["difference"] is None for r in diff["rows"])
    b, c = read(out["b"]), read(out["c"])
    for row in diff["rows"]:
        assert row["a"] == b["metrics"][row["metric"]]["tuned"] and row["b"] == c["metrics"][row["metric"]]["tuned"]
    assert {r["metric"] for r in diff["rows"]} == set(b["metrics"])
    assert "prompt sets differ" in " ".join(result.stdout.split())


def test_diff_of_a_file_that_is_not_an_eval_result_exits_2(run_cli, tmp_path, results):
    bad = tmp_path / "x.json"
    bad.write_text('{"a": 1}', "utf-8")
    result = run_cli("eval", "--diff", results[2]["a"], bad)
    assert result.exit_code == 2 and "not the JSON result of sftkit eval" in result.stderr
