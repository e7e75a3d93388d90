"""`sftkit eval --model A --model B --model C`: N-way comparisons on tiny-random variants.

Each model gets the same scores as in a one-model run; the differences with the reference come
from the same resamples (recomputed here from the seed, independently of sftkit.stats), their
p-values Holm-adjusted (recomputed here); LoRA runs on one base load that base once.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sftkit import hookimpl

ROWS = 14
SEEDS = (1, 2, 3)


def parity(predictions, references):
    """1 when the output has an even number of characters (a test metric whose scores vary by model)."""
    return {"parity": [float(len(p) % 2 == 0) for p in predictions]}


class ParityPlugin:
    @hookimpl
    def register_metrics(self, register):
        register(parity)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Three tiny-random variants (different seeds) saved as model folders, and alpaca-style rows."""
    from sftkit.models import load_tokenizer
    from sftkit.testing import varied_tiny_model

    root = tmp_path_factory.mktemp("nway")
    tokenizer = load_tokenizer("tiny-random")
    folders = []
    for seed in SEEDS:
        folder = root / f"variant{seed}"
        varied_tiny_model(seed=seed).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
    rows = [{"instruction": f"Write something about item {i}.", "input": "x" * (i % 5), "output": f"item {i}"}
            for i in range(ROWS)]
    data = root / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root, folders, data


def run(sftkit_cli, out: Path, models: list, data: Path, *extra) -> dict:
    args = [a for m in models for a in ("--model", m)]
    result = sftkit_cli("eval", *args, "--data", data, "--spec", "alpaca", "--metrics", "parity,exact_match",
                        "--max-new-tokens", "5", "--resamples", "500", "--seed", "7", "--report-dir", out, *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads((out / "eval.json").read_text("utf-8")), result


@pytest.fixture(scope="module")
def runs(workspace, tmp_path_factory):
    from sftkit.registry import set_registry
    from sftkit.testing import fresh_registry, run_cli

    root, folders, data = workspace
    registry = fresh_registry()
    registry.add_plugin(ParityPlugin(), name="parity", version="test", builtin=False)
    set_registry(registry)
    try:
        together, printed = run(run_cli, root / "together", folders, data)
        alone = [run(run_cli, root / f"alone{i}", [folder], data, "--no-compare")[0]
                 for i, folder in enumerate(folders)]
    finally:
        set_registry(None)
    return together, printed, alone


def test_each_model_scores_as_in_a_one_model_run(runs, workspace):
    together, _printed, alone = runs
    keys = ["model_1", "model_2", "model_3"]
    assert list(together["models"]) == keys and together["reference"] == "model_1"
    for key, single, folder in zip(keys, alone, workspace[1]):
        assert together["models"][key]["name"] == str(folder)
        for sub in ("parity", "exact_match"):
            assert together["metrics"][sub][key] == single["metrics"][sub]["tuned"]
        assert [e["outputs"][key] for e in together["examples"]] == [e["outputs"]["tuned"] for e in single["examples"]]
    # the variants really differ, so the comparisons below are not trivial
    texts = {key: [e["outputs"][key]["text"] for e in together["examples"]] for key in keys}
    assert texts["model_1"] != texts["model_2"] != texts["model_3"]


def test_p_values_come_from_shared_resamples_and_are_holm_adjusted(runs):
    together = runs[0]
    n, resamples, seed = together["rows"], together["bootstrap"]["resamples"], together["bootstrap"]["seed"]
    indices = np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # what the seed draws, here
    scores = {key: np.array([e["scores"][key]["parity"] for e in together["examples"]]) for key in together["models"]}
    ref = scores["model_1"]
    entry = together["metrics"]["parity"]
    raw = {}
    for key in ("model_2", "model_3"):
        observed = scores[key].mean() - ref.mean()
        diffs = scores[key][indices].mean(axis=1) - ref[indices].mean(axis=1)
        p = (1 + np.sum(np.abs(diffs - observed) >= abs(observed))) / (1 + resamples)
        got = entry["comparisons"][key]
        assert got["value"] == pytest.approx(observed)
        assert got["p_value"] == pytest.approx(min(1.0, p))
        assert got["low"] == pytest.approx(np.quantile(diffs, 0.025))
        raw[key] = min(1.0, p)
    # Holm over two comparisons: the smaller p doubled, the larger kept, made monotone
    (small_key, small), (large_key, large) = sorted(raw.items(), key=lambda kv: kv[1])
    assert entry["comparisons"][small_key]["p_holm"] == pytest.approx(min(1.0, 2 * small))
    assert entry["comparisons"][large_key]["p_holm"] == pytest.approx(max(min(1.0, 2 * small), large))
    assert "Holm" in together["bootstrap"]["correction"]
    example = together["examples"][0]
    assert set(example["outputs"]) == {"model_1", "model_2", "model_3"}
    assert example["changes"]["model_3"]["parity"] == (example["scores"]["model_3"]["parity"]
                                                       - example["scores"]["model_1"]["parity"])


def test_the_table_and_the_page_have_one_column_per_model(runs, workspace):
    together, printed, _alone = runs
    text = " ".join(printed.stdout.split())
    for header in ("(ref)", "model_2", "model_3", "p=", "holm=", "Holm-adjusted p over 2 comparison(s)",
                   "Holm: within the noise"):
        assert header in text
    html = (workspace[0] / "together" / "eval.html").read_text("utf-8")
    assert "Metrics: 3 models" in html and "model_3 - model_1 (p; Holm p)" in html
    assert "model_3 output" in html and "Holm-Bonferroni" in html


def test_holm_matches_the_textbook_example():
    from sftkit.stats import holm

    # Holm (1979) style: p = .01, .04, .03, .005 with m = 4 -> .04, .06, .06, .02
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_compare_and_no_compare_exclude_each_other_with_several_models(run_cli, workspace):
    _root, folders, data = workspace
    result = run_cli("eval", "--model", folders[0], "--model", folders[1], "--compare", "tiny-random",
                     "--no-compare", "--data", data, "--spec", "alpaca")
    assert result.exit_code == 2 and "exclude each other" in result.stderr


def lora_run(folder: Path, seed: int) -> Path:
    """A run folder as `sftkit train` writes it: a LoRA adapter on tiny-random with random (non-zero) B."""
    import torch
    from peft import LoraConfig, get_peft_model

    from sftkit.models import load_model, load_tokenizer
    from sftkit.runs import write_run

    model = get_peft_model(load_model("tiny-random"), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 2.0)
    model.save_pretrained(folder)
    load_tokenizer("tiny-random").save_pretrained(folder)
    write_run(folder, {"sftkit_version": "test", "base_model": "tiny-random", "method": "lora", "template": "alpaca",
                       "template_options": {}, "masking": "completion_only", "masking_options": {}, "spec": None,
                       "max_length": None, "added_tokens": [], "recipe": {}})
    return folder


def test_lora_runs_on_one_base_load_it_once_and_match_separate_runs(run_cli, workspace, monkeypatch, tmp_path):
    import sftkit.models

    _root, _folders, data = workspace
    runs = [lora_run(tmp_path / f"run{seed}", seed) for seed in (5, 6)]
    common = ["--data", data, "--spec", "alpaca", "--metrics", "exact_match", "--max-new-tokens", "5",
              "--resamples", "100"]
    alone = []
    for i, folder in enumerate(runs):
        result = run_cli("eval", "--model", folder, "--no-compare", *common, "--report-dir", tmp_path / f"alone{i}")
        assert result.exit_code == 0, result.stderr
        alone.append(json.loads((tmp_path / f"alone{i}" / "eval.json").read_text("utf-8")))
    loads = []
    original = sftkit.models.load_model

    def counting(name, **kwargs):
        loads.append(str(name))
        return original(name, **kwargs)

    monkeypatch.setattr(sftkit.models, "load_model", counting)
    result = run_cli("eval", "--model", runs[0], "--model", runs[1], "--compare", "tiny-random", *common,
                     "--report-dir", tmp_path / "together")
    assert result.exit_code == 0, result.stderr
    assert loads == ["tiny-random"]  # the base once; both adapters attached to it
    together = json.loads((tmp_path / "together" / "eval.json").read_text("utf-8"))
    assert list(together["models"]) == ["base", "model_1", "model_2"] and together["reference"] == "base"
    for key, single in zip(("model_1", "model_2"), alone):
        assert [e["outputs"][key]["text"] for e in together["examples"]] == \
            [e["outputs"]["tuned"]["text"] for e in single["examples"]]
    texts = {key: [e["outputs"][key]["text"] for e in together["examples"]] for key in together["models"]}
    assert texts["model_1"] != texts["base"] and texts["model_2"] != texts["model_1"]  # the adapters do differ
    loads.clear()
    result = run_cli("eval", "--model", runs[0], "--model", runs[1], "--compare", "tiny-random", "--no-share-base",
                     *common, "--report-dir", tmp_path / "apart")
    assert result.exit_code == 0, result.stderr
    assert loads == ["tiny-random"] * 3  # each run loads its base again (and merges its adapter)
    apart = json.loads((tmp_path / "apart" / "eval.json").read_text("utf-8"))
    assert [e["outputs"] for e in apart["examples"]] == [e["outputs"] for e in together["examples"]]
