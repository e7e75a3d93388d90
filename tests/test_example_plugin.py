"""The example third-party plugin, pip-installed and used through the real ``sftkit`` command.

The plugin (``tests/example_plugin``) is built and installed with pip into a temporary
folder that only the ``sftkit`` subprocesses of this module see (``PYTHONPATH``), and the
folder is deleted afterwards, even when a test fails. The shared virtual environment is
never modified, so the rest of the suite (possibly running in parallel) sees only the
built-ins. Its own unit tests (``tests/example_plugin/test_plugin.py``) run in-process.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN_SOURCE = Path(__file__).parent / "example_plugin"
SAMPLE = PLUGIN_SOURCE / "sample.txt"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """Environment variables under which ``sftkit`` sees the installed example plugin."""
    root = tmp_path_factory.mktemp("example_plugin")
    source, site = root / "source", root / "site"
    # Build from a copy so setuptools' build/ and *.egg-info never land in the repository.
    shutil.copytree(PLUGIN_SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    try:
        installed = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
             "--target", str(site), str(source)],
            capture_output=True, text=True, timeout=300,
        )
        assert installed.returncode == 0, f"pip could not install the example plugin:\n{installed.stderr}"
        assert (site / "sftkit_example_plugin-0.1.0.dist-info" / "entry_points.txt").is_file()
        env = {**os.environ, "SFTKIT_LOAD_PLUGINS": "example", "SFTKIT_NO_PROGRESS": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
        env.pop("SFTKIT_DEBUG", None)
        yield env
    finally:  # "uninstall": the plugin lives only in this folder
        shutil.rmtree(site, ignore_errors=True)


def sftkit(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sftkit", *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=600)


def test_sftkit_plugins_lists_the_installed_plugin(plugin_env):
    result = sftkit(plugin_env, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    mine = {(c["kind"], c["name"]): c for c in data["components"] if c["plugin"] == "example"}
    assert sorted(mine) == [("generators", "one_by_one"), ("loaders", "txt_pairs"), ("masking_strategies", "turn_decay"),
                            ("metrics", "length_ratio"), ("reporters", "markdown"), ("templates", "llama2_inst"),
                            ("validators", "profanity")]
    assert {c["version"] for c in mine.values()} == {"0.1.0"}
    assert mine[("masking_strategies", "turn_decay")]["options"] == {"decay": 0.5}
    assert mine[("templates", "llama2_inst")]["help"].startswith("Llama 2 chat:")
    status = next(p for p in data["plugins"] if p["name"] == "example")
    assert status["ok"] and status["package"] == "sftkit-example-plugin"

    everything = {k: v for k, v in plugin_env.items() if k != "SFTKIT_LOAD_PLUGINS"}
    assert "example" in {p["name"] for p in json.loads(sftkit(everything, "plugins", "--json").stdout)["plugins"]}
    hidden = {**plugin_env, "SFTKIT_LOAD_PLUGINS": ""}
    listed = json.loads(sftkit(hidden, "plugins", "--json").stdout)
    assert "example" not in {p["name"] for p in listed["plugins"]} and listed["left_out"] == ["example"]
    refused = sftkit(hidden, "preview", SAMPLE, "--template", "llama2_inst")
    assert refused.returncode == 2 and "unknown template 'llama2_inst'" in refused.stderr
    assert "installed plugins left out by SFTKIT_LOAD_PLUGINS: example" in refused.stderr


@pytest.fixture(scope="module")
def preview(plugin_env) -> dict:
    """``sftkit preview --format json`` of the sample through the plugin's loader, template and masking."""
    result = sftkit(plugin_env, "preview", SAMPLE, "--template", "llama2_inst", "--masking", "turn_decay",
                    "--masking-option", "decay=0.5", "--format", "json", "-n", "3")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_preview_uses_the_plugins_loader_template_and_masking(preview):
    assert (preview["template"], preview["masking"]) == ("llama2_inst", "turn_decay")
    first = preview["examples"][0]["tokens"]
    text = "".join(t["text"] for t in first)
    assert text.startswith("[INST] What is the capital of France? [/INST] Paris.")  # read by txt_pairs
    trained = "".join(t["text"] for t in first if t["trained"])
    assert trained.startswith(" Paris.") and "[INST]" not in trained
    haiku = "".join(t["text"] for t in preview["examples"][1]["tokens"] if t["trained"])
    assert "Crisp leaves drift and fall,\nthe old maple" in haiku  # continuation lines joined


def test_validate_runs_the_plugins_validator_and_reporter(plugin_env, tmp_path):
    reports = tmp_path / "reports"
    result = sftkit(plugin_env, "validate", SAMPLE, "--template", "llama2_inst", "--masking", "turn_decay",
                    "--model", "tiny-random", "--report-dir", reports, "--json", tmp_path / "v.json")
    assert result.returncode in (0, 1), result.stderr
    data = json.loads((tmp_path / "v.json").read_text())
    profanity = [i for i in data["issues"] if i["validator"] == "profanity"]
    assert [(i["code"], i["rows"]) for i in profanity] == [("profanity", [2])]
    markdown = (reports / "validate.md").read_text()
    assert markdown.startswith("# ") and "profanity" in markdown
    assert result.returncode == (1 if data["summary"]["errors"] else 0)


def test_train_then_eval_with_the_plugins_components(plugin_env, preview, tmp_path):
    run = tmp_path / "run"
    trained = sftkit(plugin_env, "train", "--data", SAMPLE, "--model", "tiny-random", "--template", "llama2_inst",
                     "--masking", "turn_decay", "--max-steps", "2", "--no-validate", "--output-dir", run)
    assert trained.returncode == 0, trained.stderr
    info = json.loads((run / "sftkit_run.json").read_text())
    assert (info["template"], info["masking"]) == ("llama2_inst", "turn_decay")
    data = json.loads((run / "train.json").read_text())["data"][0]
    assert data["rows"] == 3
    assert data["trained_tokens"] == sum(e["trained"] for e in preview["examples"])  # what was previewed trained

    out = tmp_path / "eval"
    result = sftkit(plugin_env, "eval", "--model", run, "--data", SAMPLE, "--metrics", "length_ratio",
                    "--metric-option", "length_ratio.unit=chars", "--no-compare", "--max-new-tokens", "4",
                    "--report-dir", out, "--json", out / "e.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "e.json").read_text())
    assert set(report["metrics"]) == {"length_ratio"}
    scores = []
    for example in report["examples"]:
        # the run's template (the plugin's) builds the generation prompt
        assert example["prompt"].startswith("[INST] ") and example["prompt"].endswith(" [/INST]")
        text = example["outputs"]["tuned"]["text"]
        expected = len(text) / max(len(example["reference"]), 1)  # unit=chars reached the plugin
        assert example["scores"]["tuned"]["length_ratio"] == pytest.approx(expected)
        scores.append(expected)
    assert report["metrics"]["length_ratio"]["tuned"]["value"] == pytest.approx(sum(scores) / len(scores))
    # every registered reporter runs on eval results too: the plugin's Markdown report is written
    assert sorted(p.name for p in out.iterdir()) == ["e.json", "eval.html", "eval.json", "eval.md"]
    assert "length\\_ratio" in (out / "eval.md").read_text()
