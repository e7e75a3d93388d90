"""`sftkit eval --by COLUMN`: every metric per group with its interval; groups sum to the whole and
each group's accuracy is pandas' groupby mean of the JSON's per-example scores."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "demo" / "financial_sentiment" / "spec.yaml"
SENTIMENT = Path(__file__).parent / "data" / "eval" / "sentiment.jsonl"


def run(run_cli, out: Path, *args) -> tuple[dict, object]:
    compare = [] if "--no-compare" in args else ["--compare", "tiny-random"]
    result = run_cli("eval", "--model", "tiny-random", *compare, "--max-new-tokens", "2",
                     "--resamples", "200", "--report-dir", out, *args)
    assert result.exit_code == 0, result.stderr
    return json.loads((out / "eval.json").read_text("utf-8")), result


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Rows from two tasks and a source column; some references are what tiny-random answers (found by
    a first run), so scores differ between rows and groups."""
    from sftkit.testing import run_cli

    root = tmp_path_factory.mktemp("by")
    rows = [{"instruction": f"Say something {i}", "input": "", "output": f"x{i}",
             "task": "short" if i % 3 else "long", "source": f"s{i % 2}"} for i in range(24)]
    path = root / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    first, _ = run(run_cli, root / "first", "--data", path, "--spec", "alpaca", "--metrics", "exact_match",
                   "--no-compare")
    for i, example in enumerate(first["examples"]):
        if i % 4 in (0, 1):
            rows[i]["output"] = example["outputs"]["tuned"]["text"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root, path


def test_the_task_field_is_the_default_and_groups_sum_to_the_whole(run_cli, mixed):
    root, path = mixed
    data, result = run(run_cli, root / "task", "--data", path, "--spec", "alpaca", "--column", "task=task",
                       "--metrics", "exact_match,rouge")
    info = data["breakdown"]
    assert info["by"] == "task" and [g["value"] for g in info["groups"]] == ["long", "short"]
    assert sum(g["rows"] for g in info["groups"]) == data["rows"] == 24
    frame = pd.DataFrame([{"group": e["group"], **e["scores"]["tuned"]} for e in data["examples"]])
    means = frame.groupby("group").mean()
    counts = frame.groupby("group").size()
    for group in info["groups"]:
        assert group["rows"] == counts[group["value"]]
        for sub in ("exact_match", "rouge1"):
            entry = group["metrics"][sub]
            assert entry["tuned"]["value"] == pytest.approx(means.loc[group["value"], sub])
            assert entry["tuned"]["low"] <= entry["tuned"]["value"] <= entry["tuned"]["high"]
            assert entry["difference"]["value"] == 0  # the same model twice
    # not trivially zero: the rows given the model's own answer (i % 4 in 0, 1) match, per task
    for task, of_task in (("long", lambda i: i % 3 == 0), ("short", lambda i: i % 3 != 0)):
        rows = [i for i in range(24) if of_task(i)]
        expected = sum(i % 4 in (0, 1) for i in rows) / len(rows)
        assert info["groups"][0 if task == "long" else 1]["metrics"]["exact_match"]["tuned"]["value"] == \
            pytest.approx(expected)
        assert 0 < expected < 1
    assert "by task" in " ".join(result.stdout.split())
    html = (root / "task" / "eval.html").read_text("utf-8")
    assert 'id="breakdown-table"' in html and "Breakdown by task" in html


def test_classification_breaks_down_by_label_and_warns_about_small_groups(run_cli, tmp_path):
    data, result = run(run_cli, tmp_path, "--data", SENTIMENT, "--spec", SPEC)
    info = data["breakdown"]
    assert info["by"] == "label"
    frame = pd.DataFrame([{"group": e["group"], "reference": e["reference"], **e["scores"]["tuned"]}
                          for e in data["examples"]])
    assert (frame["group"] == frame["reference"]).all()
    accuracy = frame.groupby("group")["accuracy"].mean()
    assert {g["value"]: g["metrics"]["accuracy"]["tuned"]["value"] for g in info["groups"]} == pytest.approx(
        accuracy.to_dict())
    assert sum(g["rows"] for g in info["groups"]) == data["rows"]
    small = [w for w in data["warnings"] if w["code"] == "small_groups"]
    assert small and f"fewer than {info['min_rows']} rows" in small[0]["message"]


def test_by_a_source_column_and_by_none(run_cli, mixed):
    root, path = mixed
    data, _ = run(run_cli, root / "source", "--data", path, "--spec", "alpaca", "--metrics", "exact_match",
                  "--by", "source")
    assert [(g["value"], g["rows"]) for g in data["breakdown"]["groups"]] == [("s0", 12), ("s1", 12)]
    data, _ = run(run_cli, root / "none", "--data", path, "--spec", "alpaca", "--column", "task=task",
                  "--metrics", "exact_match", "--by", "none")
    assert "breakdown" not in data and "group" not in data["examples"][0]


def test_an_unknown_column_exits_2_before_any_model_loads(run_cli, mixed):
    _root, path = mixed
    result = run_cli("eval", "--model", "no-such-model-anywhere", "--data", path, "--spec", "alpaca",
                     "--by", "colour")
    assert result.exit_code == 2 and "no evaluated row has a column 'colour'" in " ".join(result.stderr.split())
