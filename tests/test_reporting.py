"""Which reporters run (--reporter / --no-reporter, recipe keys, default = True), what they may
write (files named after the result kind or the reporter), and that an unknown name stops a
command before any work."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftkit import Result, UsageError, hookimpl
from sftkit.errors import PluginError
from sftkit.io import atomic_write_text
from sftkit.reporting import choose_reporters, named_for, write_reports
from sftkit.testing import ConformanceError, check_reporter, fresh_registry

CLEAN = Path(__file__).parent / "data" / "validate" / "clean.jsonl"
QA = Path(__file__).parent / "data" / "train" / "qa.jsonl"


def txt(result, output_dir):
    """A plain-text summary (<kind>.txt); not default-on."""
    return atomic_write_text(Path(output_dir) / f"{result.kind}.txt", f"{result.title}\n")


def loud(result, output_dir):
    """A default-on reporter (loud-<kind>.log)."""
    return atomic_write_text(Path(output_dir) / f"loud-{result.kind}.log", "x\n")


loud.default = True


class Plugin:
    @hookimpl
    def register_reporters(self, register):
        register(txt)
        register(loud)


@pytest.fixture
def registry():
    registry = fresh_registry()
    assert registry.add_plugin(Plugin(), name="extra", version="1", builtin=False).ok
    return registry


def test_the_default_is_every_reporter_that_declares_it(registry):
    assert choose_reporters(fresh_registry()) == ["html", "json"]
    assert choose_reporters(registry) == ["html", "json", "loud"]  # txt did not opt in
    assert choose_reporters(registry, leave_out=["loud", "html"]) == ["json"]
    assert choose_reporters(registry, only=["txt", "json", "txt"]) == ["txt", "json"]
    assert choose_reporters(registry, only=["txt", "json"], leave_out=["json"]) == ["txt"]


def test_an_unknown_name_is_one_message_listing_the_reporters(registry):
    with pytest.raises(UsageError, match="unknown reporter 'jsn'; available: html, json, loud, txt") as caught:
        choose_reporters(registry, only=["jsn"])
    assert caught.value.hint == "did you mean 'json'?"
    with pytest.raises(UsageError, match="unknown reporter 'pdf'"):
        choose_reporters(registry, leave_out=["pdf"])


def test_write_reports_runs_the_chosen_ones_and_versions_the_data(registry, tmp_path):
    from sftkit.testing import sample_results

    data = dict(next(r for r in sample_results() if r.kind == "validate").data)
    data.pop("schema_version")
    result = Result("validate", "t", data)
    written = write_reports(result, tmp_path / "a", registry)
    assert sorted(p.name for p in written) == ["loud-validate.log", "validate.html", "validate.json"]
    assert json.loads((tmp_path / "a" / "validate.json").read_text()) == {"schema_version": 1, **data}
    written = write_reports(result, tmp_path / "b", registry, reporters=["txt"], json_copy=tmp_path / "copy.json")
    assert [p.name for p in written] == ["validate.txt", "copy.json"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["validate.txt"]
    assert json.loads((tmp_path / "copy.json").read_text()) == {"schema_version": 1, **data}
    assert "schema_version" not in result.data  # the caller's data is not changed


def test_two_reporters_writing_one_file_are_an_error_naming_both(tmp_path):
    def clash(result, output_dir):
        """Writes the json reporter's file."""
        return atomic_write_text(Path(output_dir) / f"{result.kind}.json", "{}")

    class Clashing:
        @hookimpl
        def register_reporters(self, register):
            register(clash)

    registry = fresh_registry()
    registry.add_plugin(Clashing(), name="clashing", version="1", builtin=False)
    with pytest.raises(PluginError, match=r"reporters 'clash' and 'json' both write .*eval.json"):
        write_reports(Result("eval", "t", {}), tmp_path, registry, reporters=["clash", "json"])
    assert not list(tmp_path.iterdir())  # one set: nothing was written


@pytest.mark.parametrize("name, ok", [
    ("eval.csv", True), ("eval-examples.csv", True), ("eval_plots", True), ("csv.txt", True),
    ("csv-eval.txt", True), ("csv", True), ("eval", True),
    ("report.csv", False), ("evaluation.csv", False), ("csvfile.txt", False), (".eval.csv", False),
])
def test_report_names_are_named_after_the_kind_or_the_reporter(name, ok):
    assert named_for(name, "eval", "csv") is ok


def test_check_reporter_fails_files_named_otherwise(tmp_path):
    def results_csv(result, output_dir):
        """Writes results.csv for every kind."""
        return atomic_write_text(Path(output_dir) / "results.csv", "a\n")

    def with_sidecar(result, output_dir):
        """Returns a well-named file but also writes index.html."""
        atomic_write_text(Path(output_dir) / "index.html", "x")
        return atomic_write_text(Path(output_dir) / f"{result.kind}.md", "x")

    with pytest.raises(ConformanceError, match="returned results.csv, which is named after neither"):
        check_reporter(results_csv, tmp_path / "a")
    with pytest.raises(ConformanceError, match="wrote index.html, which is named after neither"):
        check_reporter(with_sidecar, tmp_path / "b")
    loud.default = "yes"
    try:
        with pytest.raises(ConformanceError, match="attribute default must be True or False"):
            check_reporter(loud, tmp_path / "c")
    finally:
        loud.default = True


# -- the command lines -------------------------------------------------------------------------------

def test_validate_reporter_flags(run_cli, tmp_path):
    only = run_cli("validate", CLEAN, "--no-tokenizer", "--report-dir", tmp_path / "a", "--reporter", "json")
    assert only.exit_code == 0, only.stderr
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["validate.json"]
    none = run_cli("validate", CLEAN, "--no-tokenizer", "--report-dir", tmp_path / "b", "--no-reporter", "html,json",
                   "--json", tmp_path / "copy.json")
    assert none.exit_code == 0, none.stderr
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").iterdir())
    assert json.loads((tmp_path / "copy.json").read_text())["schema_version"] == 1


def test_unknown_reporters_exit_2_before_any_work(run_cli, tmp_path):
    validate = run_cli("validate", CLEAN, "--report-dir", tmp_path / "v", "--reporter", "htm")
    assert validate.exit_code == 2 and "unknown reporter 'htm'" in validate.stderr
    assert "did you mean 'html'" in validate.stderr
    evaluated = run_cli("eval", "--model", "tiny-random", "--data", QA, "--report-dir", tmp_path / "e",
                        "--no-reporter", "pdf")
    assert evaluated.exit_code == 2 and "unknown reporter 'pdf'" in evaluated.stderr
    assert "loading" not in evaluated.stderr  # no model was loaded
    trained = run_cli("train", "--data", QA, "--model", "tiny-random", "--max-steps", "1", "--output-dir",
                      tmp_path / "run", "--reporter", "json,pdf")
    assert trained.exit_code == 2 and "unknown reporter 'pdf'" in trained.stderr
    assert not (tmp_path / "run").exists()


def test_train_recipe_chooses_the_reporters(run_cli, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data: [{QA}]\nmodel: tiny-random\nmax_steps: 1\nvalidate: false\n"
                      f"output_dir: {tmp_path / 'run'}\nreporters: [json, html]\n", encoding="utf-8")
    trained = run_cli("train", recipe, "--no-reporter", "html")
    assert trained.exit_code == 0, trained.stderr
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert "train.json" in files and "train.html" not in files
    saved = (tmp_path / "run" / "recipe.yaml").read_text()
    assert "reporters:\n- json\n- html\n" in saved and "no_reporters:\n- html\n" in saved
