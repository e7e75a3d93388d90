"""Changing issue severities by code, from the spec or with --severity."""
from __future__ import annotations

import json

import pytest

from sftkit.errors import DataError
from sftkit.spec import spec_from_dict

ROWS = [
    {"instruction": "Classify: good", "output": "positive"},
    {"instruction": "Classify: good", "output": "negative"},
    {"instruction": "Classify: bad", "output": "negative"},
    {"instruction": "Classify: fine", "output": "positive"},
]


@pytest.fixture
def conflicting(tmp_path):
    path = tmp_path / "conflict.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    spec = tmp_path / "spec.yaml"
    spec.write_text("format: alpaca\ntask: classification\nlabels: [positive, negative]\n")
    return path, spec


def _issues(tmp_path, name):
    return {i["code"]: i for i in json.loads((tmp_path / name).read_text())["issues"]}


def test_conflicting_labels_is_an_error_by_default_and_can_be_downgraded(run_cli, conflicting, tmp_path):
    path, spec = conflicting
    common = ["validate", path, "--spec", spec, "--no-tokenizer", "--only", "consistency", "--report-dir", tmp_path]
    strict = run_cli(*common, "--json", tmp_path / "a.json")
    assert strict.exit_code == 1
    assert _issues(tmp_path, "a.json")["conflicting_labels"]["severity"] == "error"
    relaxed = run_cli(*common, "--severity", "conflicting_labels=warning", "--json", tmp_path / "b.json")
    assert relaxed.exit_code == 0, relaxed.stderr
    issue = _issues(tmp_path, "b.json")["conflicting_labels"]
    assert issue["severity"] == "warning" and issue["rows"] == [0, 1]
    assert issue["details"]["default_severity"] == "error"
    off = run_cli(*common, "--severity", "conflicting_labels=off", "--json", tmp_path / "c.json")
    assert off.exit_code == 0 and "conflicting_labels" not in _issues(tmp_path, "c.json")
    bad = run_cli(*common, "--severity", "conflicting_labels=fatal")
    assert bad.exit_code == 2 and "error, warning, info, off" in bad.stderr


def test_the_spec_severity_map_applies_and_the_flag_wins(run_cli, conflicting, tmp_path):
    path, spec = conflicting
    spec.write_text(spec.read_text() + "severity: {conflicting_labels: info}\n")
    common = ["validate", path, "--spec", spec, "--no-tokenizer", "--only", "consistency", "--report-dir", tmp_path]
    assert run_cli(*common, "--json", tmp_path / "a.json").exit_code == 0
    assert _issues(tmp_path, "a.json")["conflicting_labels"]["severity"] == "info"
    assert run_cli(*common, "--severity", "conflicting_labels=error", "--json", tmp_path / "b.json").exit_code == 1


def test_a_bad_severity_map_in_a_spec_is_a_data_error():
    with pytest.raises(DataError, match="severity"):
        spec_from_dict({"format": "alpaca", "severity": {"conflicting_labels": "loud"}})
