"""No user file is ever replaced: run folders are claimed and locked, outputs never overwrite inputs."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QA = HERE / "data" / "train" / "qa.jsonl"
CLEAN = HERE / "data" / "validate" / "clean.jsonl"


def _err(result) -> str:
    return " ".join(result.stderr.split())


def _train(out, *extra):
    return ["train", "--data", QA, "--model", "tiny-random", "--max-steps", "1", "--output-dir", out,
            "--no-validate", *extra]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_train_refuses_a_folder_that_is_not_a_run(tmp_path, run_cli):
    mine = tmp_path / "my-project"
    mine.mkdir()
    for name, text in {"README.md": "my notes\n", "metrics.jsonl": '{"mine": 1}\n', "config.json": "{}\n"}.items():
        (mine / name).write_text(text, "utf-8")
    before = _snapshot(mine)
    for extra in ((), ("--overwrite",)):
        result = run_cli(*_train(mine, *extra))
        assert result.exit_code == 2, result.stderr
        assert "not a sftkit run folder" in _err(result) and "README.md" in _err(result)
        assert "Traceback" not in result.stderr
    assert _snapshot(mine) == before


def test_train_accepts_an_empty_folder_and_marks_it(tmp_path, run_cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(*_train(empty)).exit_code == 0
    assert (empty / ".sftkit-run.lock").is_file() and (empty / "sftkit_run.json").is_file()
    again = run_cli(*_train(empty))  # now a run: needs --resume or --overwrite, as before
    assert again.exit_code == 2 and "already holds a run" in _err(again)
    assert run_cli(*_train(empty, "--overwrite")).exit_code == 0


def test_output_dir_that_is_a_file_or_holds_the_data(tmp_path, run_cli):
    a_file = tmp_path / "file"
    a_file.write_text("keep me\n", "utf-8")
    result = run_cli(*_train(a_file))
    assert result.exit_code == 2 and "is a file" in _err(result)
    assert a_file.read_text("utf-8") == "keep me\n"

    holder = tmp_path / "holder"
    holder.mkdir()
    data = holder / "qa.jsonl"
    data.write_bytes(QA.read_bytes())
    result = run_cli("train", "--data", data, "--model", "tiny-random", "--max-steps", "1", "--output-dir", holder,
                     "--no-validate")
    assert result.exit_code == 2 and "holds the input file" in _err(result)
    assert data.read_bytes() == QA.read_bytes()


def test_a_second_training_into_a_held_folder_is_refused(tmp_path, run_cli):
    out = tmp_path / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from sftkit.runs import claim_run_folder; claim_run_folder(sys.argv[1]); "
         "print('claimed', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        result = run_cli(*_train(out))
        assert result.exit_code == 2, result.stderr
        assert f"in use by another training (pid {holder.pid})" in _err(result)
        assert not (out / "sftkit_run.json").exists() and not (out / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert run_cli(*_train(out)).exit_code == 0  # the lock died with its holder


def test_validate_json_cannot_overwrite_the_dataset(tmp_path, run_cli):
    data = tmp_path / "data.jsonl"
    data.write_bytes(CLEAN.read_bytes())
    result = run_cli("validate", data, "--no-tokenizer", "--json", data, "--report-dir", tmp_path / "reports")
    assert result.exit_code == 2 and "is the input file" in _err(result)
    assert data.read_bytes() == CLEAN.read_bytes()
    assert not (tmp_path / "reports").exists()  # refused before any work


def test_a_report_named_like_the_dataset_is_refused(tmp_path, run_cli):
    rows = [json.loads(line) for line in CLEAN.read_text("utf-8").splitlines() if line.strip()]
    data = tmp_path / "validate.json"  # the json reporter's file name in the report folder
    data.write_text(json.dumps(rows), "utf-8")
    before = data.read_bytes()
    result = run_cli("validate", data, "--no-tokenizer", "--report-dir", tmp_path)
    assert result.exit_code == 2 and "input file" in _err(result)
    assert data.read_bytes() == before


def test_eval_json_cannot_overwrite_the_dataset(tmp_path, run_cli):
    data = tmp_path / "eval.jsonl"
    data.write_bytes(QA.read_bytes())
    result = run_cli("eval", "--model", "tiny-random", "--data", data, "--json", data)
    assert result.exit_code == 2 and "is the input file" in _err(result)
    assert "loading" not in result.stderr  # refused before any model loads
    assert data.read_bytes() == QA.read_bytes()
