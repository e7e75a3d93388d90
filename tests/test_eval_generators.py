"""`sftkit eval --generator`: the generator plugins through the command line (options checked
before any model loads; the built-ins give the same outputs on tiny-random)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "data" / "eval"
ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "demo" / "financial_sentiment" / "spec.yaml"
SENTIMENT = FIXTURES / "sentiment.jsonl"


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("args, message", [
    (["--generator", "nope"], "unknown generator 'nope'"),
    (["--generator-option", "beams=2"], "has no option 'beams'"),
    (["--generator-option", "share_prefix=maybe"], "option share_prefix must be true or false"),
    (["--generator-option", "batch_size=3"], "set it with --batch-size"),
    (["--generator", "continuous", "--generator-option", "page_size=1"], "option page_size must be at least 4"),
    (["--max-batch-tokens", "0"], "--max-batch-tokens"),
])
def test_bad_generator_flags_exit_2_before_any_model_loads(run_cli, args, message):
    result = run_cli("eval", "--model", "no-such-model-anywhere", "--data", SENTIMENT, "--spec", SPEC, *args)
    assert result.exit_code == 2, result.stderr
    assert message in flat(result.stderr) and "Traceback" not in result.stderr


def test_vllm_without_vllm_or_a_gpu_exits_2_with_the_reason(run_cli):
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vLLM and a GPU are here: the generator can run")
    result = run_cli("eval", "--model", "no-such-model-anywhere", "--data", SENTIMENT, "--spec", SPEC,
                     "--generator", "vllm")
    assert result.exit_code == 2
    assert "generator 'vllm' cannot run here" in flat(result.stderr) and "Traceback" not in result.stderr


def test_generators_give_the_same_outputs_and_are_recorded(run_cli, tmp_path):
    common = ["--model", "tiny-random", "--data", SENTIMENT, "--spec", SPEC, "--max-new-tokens", "4", "--resamples",
              "100", "--no-compare"]
    outputs = {}
    for name in ("hf", "continuous"):
        result = run_cli("eval", *common, "--generator", name, "--report-dir", tmp_path / name)
        assert result.exit_code == 0, result.stderr
        data = json.loads((tmp_path / name / "eval.json").read_text("utf-8"))
        assert data["generation"]["generator"] == name
        assert data["generation"]["generator_version"].startswith("transformers ")
        outputs[name] = [e["outputs"]["tuned"] for e in data["examples"]]
    assert outputs["hf"] == outputs["continuous"]
    result = run_cli("plugins")
    assert result.exit_code == 0 and "generators" in result.stdout and "continuous" in result.stdout
