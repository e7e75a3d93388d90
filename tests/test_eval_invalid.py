"""The warning on too many unmappable classification outputs (``--max-invalid-share``) in the
JSON, the HTML report and the terminal, and the confusion matrix near the top of the HTML."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftkit.eval.engine import invalid_warnings
from sftkit.eval.scoring import ModelRun
from sftkit.labels import INVALID, Mapped

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "demo" / "financial_sentiment" / "spec.yaml"
SENTIMENT = Path(__file__).parent / "data" / "eval" / "sentiment.jsonl"


def _run(role: str, invalid: int, total: int) -> ModelRun:
    labels = [Mapped(INVALID, "invalid", "no label") if i < invalid else Mapped("positive", "exact")
              for i in range(total)]
    return ModelRun(role, role, None, ["x"] * total, [], 0.0, labels=labels)


@pytest.mark.parametrize("invalid, total, threshold", [(0, 10, 0.0), (1, 10, 0.1), (2, 10, 0.1), (3, 4, 0.5),
                                                       (4, 4, 1.0), (1, 3, 0.0)])
def test_a_warning_exactly_when_the_share_exceeds_the_threshold(invalid, total, threshold):
    warnings = invalid_warnings({"tuned": _run("tuned", invalid, total)}, threshold)
    expected = invalid * 1.0 / total > threshold
    assert bool(warnings) == expected
    if expected:
        (w,) = warnings
        assert w["code"] == "invalid_share" and w["model"] == "tuned" and w["rows"] == list(range(invalid))
        assert f"{invalid} of {total}" in w["message"]


def test_each_model_is_judged_on_its_own_outputs():
    warnings = invalid_warnings({"base": _run("base", 5, 10), "tuned": _run("tuned", 0, 10)}, 0.1)
    assert [w["model"] for w in warnings] == ["base"]


def _eval(run_cli, out: Path, *args: str):
    result = run_cli("eval", "--model", "tiny-random", "--no-compare", "--data", SENTIMENT, "--spec", SPEC,
                     "--max-new-tokens", "4", "--resamples", "100", "--report-dir", out, *args)
    assert result.exit_code == 0, result.stderr
    data = json.loads((out / "eval.json").read_text("utf-8"))
    return result, data, (out / "eval.html").read_text("utf-8")


def test_the_warning_appears_in_json_html_and_terminal_only_above_the_threshold(run_cli, tmp_path):
    # the default threshold (0.1); the expected verdict comes from the counted invalid outputs
    result, data, html = _eval(run_cli, tmp_path / "default")
    invalid = data["classification"]["models"]["tuned"]["invalid"]
    share = invalid / data["rows"]
    assert share > 0  # the random model's outputs map to no label
    warned = [w for w in data["warnings"] if w["code"] == "invalid_share"]
    assert bool(warned) == (share > 0.1)
    if warned:
        assert warned[0]["model"] == "tuned" and len(warned[0]["rows"]) == invalid
        assert f"{invalid} of {data['rows']} outputs" in " ".join(result.stderr.split())
        assert "invalid_share" in html and html.index("invalid_share") < html.index('id="metrics-table"')
    # at 1 nothing can exceed it: no warning anywhere
    result, data, html = _eval(run_cli, tmp_path / "one", "--max-invalid-share", "1")
    assert not [w for w in data["warnings"] if w["code"] == "invalid_share"]
    assert "invalid_share" not in html and "max-invalid-share" not in " ".join(result.stderr.split())
    # the confusion matrix comes before the metrics table and the examples
    assert html.index("true \\ predicted") < html.index('id="metrics-table"') < html.index('id="examples-table"')


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "lots"])
def test_a_share_outside_0_to_1_exits_2_before_any_model_loads(run_cli, value):
    result = run_cli("eval", "--model", "no-such-model-anywhere", "--data", SENTIMENT, "--spec", SPEC,
                     "--max-invalid-share", value)
    assert result.exit_code == 2 and "--max-invalid-share" in result.stderr and "Traceback" not in result.stderr


def test_the_sample_report_shows_warnings_and_confusion_before_the_examples():
    from sftkit.plugins.reporters.html_eval import render
    from sftkit.testing import sample_results

    for result in [r for r in sample_results() if r.kind == "eval"]:  # two models, then an N-way run
        html = render(result)
        assert html.index("invalid_share") < html.index("true \\ predicted") < html.index('id="examples-table"')
