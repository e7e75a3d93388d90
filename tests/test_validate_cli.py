"""`sftkit validate` on the command line: exit codes, reports, options, and data that tries
to become markup in the terminal or the HTML page."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

CLEAN = Path(__file__).parent / "data" / "validate" / "clean.jsonl"
RICH_LINK = "[link=javascript:alert(1)]click[/link]"
SCRIPT = "<script>alert('x')</script>"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def clean_rows() -> list[dict]:
    return [json.loads(line) for line in CLEAN.read_text("utf-8").splitlines()]


def test_clean_data_passes_and_writes_reports(run_cli, tmp_path):
    out = tmp_path / "out" / "v.json"
    result = run_cli("validate", CLEAN, "--report-dir", tmp_path / "r", "--json", out)
    assert result.exit_code == 0, result.stdout + result.stderr
    data = json.loads(out.read_text("utf-8"))
    assert data["summary"] == {"rows": 24, "errors": 0, "warnings": 0, "infos": 0}
    assert data["issues"] == []
    assert set(data["stats"]) == {"schema", "quality", "consistency", "balance", "tokenization", "leakage"}
    assert json.loads((tmp_path / "r" / "validate.json").read_text("utf-8")) == data
    page = (tmp_path / "r" / "validate.html").read_text("utf-8")
    assert "Token / mask view" in page and 'class="tok t"' in page and 'class="tok m"' in page
    assert "max length 1024" in page  # the histogram's max-length line
    for name in ("schema", "quality", "consistency", "balance", "tokenization", "leakage"):
        assert f'id="v-{name}"' in page
        assert name in result.stdout
    assert "validate.html" in result.stderr


def test_issues_exit_1_with_rows_and_json_schema(run_cli, tmp_path):
    rows = clean_rows()
    rows[3]["output"] = ""
    rows.append(dict(rows[5]))
    out = tmp_path / "v.json"
    result = run_cli("validate", write_jsonl(tmp_path / "d.jsonl", rows), "--no-tokenizer", "--report-dir", tmp_path,
                     "--json", out)
    assert result.exit_code == 1
    data = json.loads(out.read_text("utf-8"))
    assert data["summary"] == {"rows": 25, "errors": 1, "warnings": 1, "infos": 0}
    for issue in data["issues"]:
        assert {"validator", "code", "severity", "message", "rows"} <= set(issue)
    assert [(i["code"], i["rows"]) for i in data["issues"]] == [("empty_output", [3]), ("exact_duplicate", [5, 24])]
    assert "quality.empty_output" in result.stdout and "rows 3" in result.stdout
    assert "skipped" in data["stats"]["tokenization"]


def test_fail_on_warning(run_cli, tmp_path):
    rows = clean_rows()
    rows.append(dict(rows[5]))  # a duplicate: a warning only
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    assert run_cli("validate", data, "--no-tokenizer", "--report-dir", tmp_path).exit_code == 0
    assert run_cli("validate", data, "--no-tokenizer", "--report-dir", tmp_path, "--fail-on", "warning").exit_code == 1


def test_only_skip_and_validator_options(run_cli, tmp_path):
    rows = clean_rows()
    rows[1]["output"] = "ok"  # short_output under the default of 3 characters
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "v.json"
    run_cli("validate", data, "--only", "quality,schema", "--report-dir", tmp_path, "--json", out)
    parsed = json.loads(out.read_text("utf-8"))
    assert parsed["dataset"]["validators"] == ["schema", "quality"]
    assert [i["code"] for i in parsed["issues"]] == ["short_output"]
    run_cli("validate", data, "--only", "quality", "--validator-option", "quality.min_output_chars=2",
            "--report-dir", tmp_path, "--json", out)
    assert json.loads(out.read_text("utf-8"))["issues"] == []
    run_cli("validate", data, "--no-tokenizer", "--skip", "quality", "--skip", "leakage", "--report-dir", tmp_path,
            "--json", out)
    assert json.loads(out.read_text("utf-8"))["dataset"]["validators"] == [
        "schema", "consistency", "balance", "tokenization"]


def test_validator_options_from_the_spec(run_cli, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: mine\nformat: alpaca\nvalidators: {quality: {min_output_chars: 2}}\n", "utf-8")
    rows = clean_rows()
    rows[1]["output"] = "ok"
    out = tmp_path / "v.json"
    result = run_cli("validate", write_jsonl(tmp_path / "d.jsonl", rows), "--spec", spec, "--only", "quality",
                     "--report-dir", tmp_path, "--json", out)
    assert result.exit_code == 0 and json.loads(out.read_text("utf-8"))["issues"] == []


@pytest.mark.parametrize("args, words", [
    (["--only", "nope"], ["unknown validator 'nope'", "quality"]),
    (["--validator-option", "quality.nope=1"], ["quality", "nope", "min_output_chars"]),
    (["--validator-option", "nope=1"], ["quality.nope=1"]),
    (["--validator-option", "quality.near_dup_threshold=high"],
     ["option near_dup_threshold must be a number more than 0 and at most 1, got 'high'",
      "from --validator-option quality.near_dup_threshold=high"]),
])
def test_usage_errors_exit_2(run_cli, tmp_path, args, words):
    result = run_cli("validate", CLEAN, "--no-tokenizer", "--report-dir", tmp_path, *args)
    assert result.exit_code == 2
    for word in words:
        assert word in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unreadable_input_exits_2(run_cli, tmp_path):
    assert run_cli("validate", tmp_path / "missing.jsonl", "--report-dir", tmp_path).exit_code == 2
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a b c", "output": "fine"}\n{"instruction": \n', "utf-8")
    result = run_cli("validate", broken, "--no-tokenizer", "--report-dir", tmp_path)
    assert result.exit_code == 2 and "line 2" in " ".join(result.stderr.split())  # Rich may wrap anywhere
    assert not (tmp_path / "validate.html").exists()


def test_markup_in_data_stays_text(run_cli, tmp_path):
    rows = clean_rows()
    rows[0]["output"] = f"{RICH_LINK} and a stray [/] and {SCRIPT} <img src=x onerror=alert(1)> {{{{ 7*7 }}}}"
    rows.append(dict(rows[0]))  # a duplicate, so the row is flagged and shown
    result = run_cli("validate", write_jsonl(tmp_path / "d.jsonl", rows), "--report-dir", tmp_path,
                     "--fail-on", "warning")
    assert result.exit_code == 1, result.stderr
    assert "[link=javascript:alert(1)]click[/link]" in result.stdout.replace("\n", "")
    assert "[/]" in result.stdout
    page = (tmp_path / "validate.html").read_text("utf-8")
    assert SCRIPT not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "{{ 7*7 }}" in page and "49" not in page.split("<main>")[1].split("{{ 7*7 }}")[0][-20:]


def test_a_failing_validator_is_named(sftkit_registry, register_plugin, sftkit_cli, tmp_path):
    from sftkit import hookimpl

    def explodes(context):
        """Always fails."""
        raise ZeroDivisionError("boom")

    class Plugin:
        @hookimpl
        def register_validators(self, register):
            register(explodes)

    register_plugin(Plugin(), name="fragile-plugin")
    result = sftkit_cli("validate", CLEAN, "--no-tokenizer", "--report-dir", tmp_path)
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "validator 'explodes' from plugin fragile-plugin" in message and "ZeroDivisionError: boom" in message
    assert "Traceback" not in result.stderr
    assert sftkit_cli("validate", CLEAN, "--no-tokenizer", "--skip", "explodes", "--report-dir", tmp_path).exit_code == 0


def test_eval_data_leakage(run_cli, tmp_path):
    rows = clean_rows()
    evals = write_jsonl(tmp_path / "eval.jsonl", [rows[7], {"instruction": "Name a large ocean.", "output": "Pacific"}])
    out = tmp_path / "v.json"
    result = run_cli("validate", CLEAN, "--no-tokenizer", "--eval-data", evals, "--report-dir", tmp_path, "--json", out)
    assert result.exit_code == 1
    (issue,) = json.loads(out.read_text("utf-8"))["issues"]
    assert (issue["code"], issue["rows"], issue["details"]["eval_rows"]) == ("eval_overlap", [7], [0])


def test_python_api_for_train():
    from conftest import validate_file
    from sftkit.validation import failed

    result = validate_file(CLEAN, model=None, only=["quality"])
    assert result.kind == "validate" and not failed(result) and not failed(result, "warning")
    assert result.data["summary"]["rows"] == 24


def test_skip_invalid_lists_broken_lines(run_cli, tmp_path):
    lines = CLEAN.read_text("utf-8").splitlines()
    lines.insert(3, '{"instruction": "broken')
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(lines) + "\n", "utf-8")
    out = tmp_path / "v.json"
    assert run_cli("validate", data, "--no-tokenizer", "--report-dir", tmp_path).exit_code == 2
    result = run_cli("validate", data, "--no-tokenizer", "--skip-invalid", "--report-dir", tmp_path, "--json", out)
    assert result.exit_code == 0, result.stderr
    parsed = json.loads(out.read_text("utf-8"))
    assert parsed["summary"]["rows"] == 24
    assert [s["line"] for s in parsed["dataset"]["skipped_lines"]] == [4]
    assert f"skipped: {data}, line 4: invalid JSON" in result.stderr
