"""Every recipe shipped under demo/ parses and trains two steps (on `tiny-random`, or
`tiny-random-t5` for an encoder-decoder recipe, the model overridden): the demo, the
summarization demos and the ablations cannot rot unnoticed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo"
RECIPES = sorted(p for p in DEMO.rglob("*.yaml") if p.name != "spec.yaml")
# Keys the test overrides, or whose stored form differs from the file's (paths are resolved).
OVERRIDDEN = {"model", "max_steps", "epochs", "output_dir", "overwrite", "validate", "data", "spec", "eval_data"}


def test_the_demo_recipes_are_found():
    names = {p.relative_to(DEMO).as_posix() for p in RECIPES}
    assert {"recipe.yaml", "dialogsum/recipe.yaml", "ablations/base.yaml", "ablations/full_masking.yaml",
            "ablations/full_ft.yaml", "ablations/no_packing.yaml", "ablations/alpaca.yaml",
            "flan_t5_dialogsum/recipe.yaml"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.relative_to(DEMO).as_posix())
def test_demo_recipe_trains_two_steps(recipe, tmp_path, run_cli):
    settings = yaml.safe_load(recipe.read_text("utf-8"))
    for entry in settings["data"]:  # paths are relative to the recipe file
        path = entry if isinstance(entry, str) else entry["path"]
        path = path.rpartition(":")[0] if ":" in path else path  # PATH:WEIGHT
        assert (recipe.parent / path).is_file(), path
    out = tmp_path / "run"
    tiny = "tiny-random-t5" if "t5" in str(settings.get("model", "")) else "tiny-random"  # an encoder-decoder's
    result = run_cli("train", recipe, "--model", tiny, "--max-steps", "2", "--batch-size", "2",
                     "--output-dir", out, "--no-validate")
    assert result.exit_code == 0, result.stderr
    info = json.loads((out / "train.json").read_text("utf-8"))
    assert info["summary"]["steps"] == 2 and info["summary"]["trained_tokens"] > 0
    stored = info["settings"]
    for key, value in settings.items():
        if key not in OVERRIDDEN and key != "batch_size":
            assert stored[key] == value, (key, stored[key], value)
    assert stored["model"] == tiny and stored["batch_size"] == 2
    assert len(stored["data"]) == len(settings["data"])
