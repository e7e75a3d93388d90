"""Reliability, round three (issue 18): damaged run folders, and full disks during validate,
train and eval.

Run folders: ``sftkit eval --model RUN``, ``sftkit chat RUN`` and ``sftkit export RUN OUT`` check
the folder when they open it (``sftkit.runs.run_folder_problem``). Each damaged file of the
corpus ``tests/data/bad/round3/`` replaces its file in a copy of a run folder trained here; each
missing file is deleted from one. Every case: exit 2, one message naming the file and what is
wrong, a hint saying what to do, no traceback, and nothing written (no report, no export).

Full disks: a write that fails with ENOSPC after some bytes (the bytes before it reach the disk)
in validate, train and eval: exit 2, the message names the file, no partial or temporary file is
left, and nothing a reader would take for complete (a run folder is finished only once its
``sftkit_run.json`` is written; a set of reports is replaced whole or not at all).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from sftkit.testing import run_cli
from conftest import assert_one_clean_error

HERE = Path(__file__).resolve().parent
BAD = HERE / "data" / "bad"
ROUND3 = BAD / "round3"
DATA = HERE / "data" / "train" / "sentiment.jsonl"
SPEC = HERE.parent / "demo" / "financial_sentiment" / "spec.yaml"


def _train(out: Path, *more: str):
    return run_cli("train", "--data", DATA, "--spec", SPEC, "--model", "tiny-random", "--max-steps", "2",
                   "--batch-size", "4", "--no-validate", "--output-dir", out, *more)


@pytest.fixture(scope="module")
def sound_run(tmp_path_factory) -> Path:
    """A LoRA run of two steps with a checkpoint after the first."""
    out = tmp_path_factory.mktemp("round3") / "run"
    result = _train(out, "--save-steps", "1")
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """A full fine-tuning run of two steps (config.json + model.safetensors)."""
    folder = tmp_path_factory.mktemp("round3-full")
    recipe = folder / "recipe.yaml"
    recipe.write_text("method: full\nlr: 1.0e-5\n", "utf-8")
    out = folder / "run"
    result = _train(out, str(recipe))
    assert result.exit_code == 0, result.stderr
    return out


# -- the sound run ---------------------------------------------------------------------------------

def test_a_finished_run_records_the_sha256_of_its_weights_and_passes_the_checks(sound_run):
    from sftkit.runs import open_run, run_folder_problem

    info = json.loads((sound_run / "sftkit_run.json").read_text("utf-8"))
    weights = sound_run / "adapter_model.safetensors"
    assert info["sha256"] == {"adapter_model.safetensors": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert run_folder_problem(sound_run) is None
    assert open_run(sound_run)["base_model"] == "tiny-random"
    # saved with the mode of a plainly created file, as the other run files (not safetensors' private 0600)
    assert weights.stat().st_mode & 0o777 == (sound_run / "adapter_config.json").stat().st_mode & 0o777


def test_a_full_run_records_its_weights_and_passes_the_checks(full_run):
    from sftkit.runs import run_folder_problem

    info = json.loads((full_run / "sftkit_run.json").read_text("utf-8"))
    assert list(info["sha256"]) == ["model.safetensors"]
    assert info["sha256"]["model.safetensors"] == hashlib.sha256((full_run / "model.safetensors").read_bytes()).hexdigest()
    assert run_folder_problem(full_run) is None


# -- damaged run folders: (case, corpus file or None to delete the target, target, fragment) ----------

def _truncated_sizes() -> str:
    whole = (ROUND3 / "adapter_model_other.safetensors").stat().st_size
    part = (ROUND3 / "adapter_model_truncated.safetensors").stat().st_size
    assert part < whole
    return f"adapter_model.safetensors is truncated ({part:,} of {whole:,} bytes)"


RUN_FILE_FIELD = "sftkit_run.json, field"
CASES = [
    ("adapter truncated", "adapter_model_truncated.safetensors", "adapter_model.safetensors", _truncated_sizes()),
    ("adapter empty", "adapter_model_empty.safetensors", "adapter_model.safetensors",
     "adapter_model.safetensors is empty (0 bytes)"),
    ("adapter header garbled", "adapter_model_header_garbled.safetensors", "adapter_model.safetensors",
     "adapter_model.safetensors has a garbled safetensors header (Expecting ',' delimiter"),
    ("adapter is a zip", "adapter_model_not_safetensors.safetensors", "adapter_model.safetensors",
     "adapter_model.safetensors is not a safetensors file (it is a ZIP archive, as torch.save writes)"),
    ("adapter replaced (checksum)", "adapter_model_other.safetensors", "adapter_model.safetensors",
     "adapter_model.safetensors does not match its sha256 recorded at save time"),
    ("adapter missing", None, "adapter_model.safetensors", "adapter_model.safetensors is missing"),
    ("adapter config garbled", "adapter_config_garbled.json", "adapter_config.json",
     "adapter_config.json is damaged (not valid JSON: Expecting value: line 1 column 28"),
    ("adapter config a list", "adapter_config_list.json", "adapter_config.json",
     "adapter_config.json is damaged (not a JSON object)"),
    ("adapter config missing", None, "adapter_config.json", "adapter_config.json is missing"),
    ("tokenizer garbled", "tokenizer_garbled.json", "tokenizer.json", "tokenizer.json is damaged (not valid JSON"),
    ("tokenizer config garbled", "tokenizer_config_garbled.json", "tokenizer_config.json",
     "tokenizer_config.json is damaged (not valid JSON"),
    ("tokenizer config missing", None, "tokenizer_config.json", "tokenizer_config.json is missing"),
    ("run file truncated", "sftkit_run_truncated.json", "sftkit_run.json",
     "sftkit_run.json: unreadable run description"),
    ("run file not an object", "sftkit_run_not_object.json", "sftkit_run.json",
     "sftkit_run.json: the run description must be a JSON object"),
    ("saved spec columns a list", "sftkit_run_spec_columns_list.json", "sftkit_run.json",
     (f"{RUN_FILE_FIELD} 'spec': the saved dataset spec is not well-formed: field 'columns': columns must map "
      f"canonical fields to source columns, got a list")),
    ("saved spec a text", "sftkit_run_spec_text.json", "sftkit_run.json",
     f"{RUN_FILE_FIELD} 'spec': the saved dataset spec must be a mapping, got str"),
    ("saved recipe lr negative", "sftkit_run_recipe_lr_negative.json", "sftkit_run.json",
     f"{RUN_FILE_FIELD} 'recipe': the saved recipe: lr must be more than 0, got -0.5"),
    ("saved recipe a list", "sftkit_run_recipe_list.json", "sftkit_run.json",
     f"{RUN_FILE_FIELD} 'recipe': the saved recipe must be a mapping, got list"),
    ("base model empty", "sftkit_run_base_model_empty.json", "sftkit_run.json",
     f"{RUN_FILE_FIELD} 'base_model': base_model must name the base model (text), got ''"),
    ("method unknown", "sftkit_run_method_unknown.json", "sftkit_run.json",
     f"{RUN_FILE_FIELD} 'method': unknown method 'qlora' (expected lora or full)"),
    ("max length a text", "sftkit_run_max_length_text.json", "sftkit_run.json",
     f"{RUN_FILE_FIELD} 'max_length': max_length must be a whole number of 1 or more, got 'long'"),
    ("template a number", "sftkit_run_template_number.json", "sftkit_run.json",
     f"{RUN_FILE_FIELD} 'template': template must be text, got int"),
    ("checksums garbled", "sftkit_run_sha256_garbled.json", "sftkit_run.json",
     f"{RUN_FILE_FIELD} 'sha256': sha256 must map file names to hex digests"),
]
COMMANDS = ["eval", "chat", "export"]


def _damaged(sound_run: Path, tmp_path: Path, corpus: str | None, target: str) -> Path:
    run = tmp_path / "run"
    shutil.copytree(sound_run, run)
    if corpus is None:
        (run / target).unlink()
    else:
        shutil.copyfile(ROUND3 / corpus, run / target)
    return run


def _open(command: str, run: Path, tmp_path: Path):
    if command == "eval":
        return run_cli("eval", "--model", run, "--data", DATA, "--spec", SPEC, "--limit", "1", "--no-compare",
                       "--report-dir", tmp_path / "reports")
    if command == "chat":
        return run_cli("chat", run, "--prompt", "Shares rose 5% after the results.")
    return run_cli("export", run, tmp_path / "exported")


def _nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "reports").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no export, no temporary export folder


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case, corpus, target, fragment", CASES, ids=[c[0] for c in CASES])
def test_a_damaged_run_folder_is_one_message_naming_the_file(sound_run, tmp_path, command, case, corpus, target,
                                                             fragment):
    run = _damaged(sound_run, tmp_path, corpus, target)
    result = _open(command, run, tmp_path)
    assert_one_clean_error(result, f"error: cannot use the run folder {run}: {run}/", fragment,
                           f"hint: write it again from its newest sound checkpoint (sftkit train {run / 'recipe.yaml'} "
                           f"--output-dir {run} --resume latest-valid)")
    _nothing_written(tmp_path)


def test_a_damaged_compare_model_is_refused_before_any_model_loads(sound_run, tmp_path):
    run = _damaged(sound_run, tmp_path, "adapter_model_truncated.safetensors", "adapter_model.safetensors")
    for args in (("eval", "--model", "tiny-random", "--compare", run, "--data", DATA, "--spec", SPEC, "--limit", "1",
                  "--report-dir", tmp_path / "reports"),
                 ("eval", "--model", "tiny-random", "--model", run, "--data", DATA, "--spec", SPEC, "--limit", "1",
                  "--report-dir", tmp_path / "reports"),  # N-way: every model is checked first
                 ("eval", "--model", "tiny-random", "--model", "tiny-random", "--compare", run, "--data", DATA,
                  "--spec", SPEC, "--limit", "1", "--report-dir", tmp_path / "reports"),
                 ("chat", "tiny-random", "--compare", run, "--prompt", "hi")):
        result = run_cli(*args)
        assert_one_clean_error(result, f"cannot use the run folder {run}", _truncated_sizes())
        assert "loading" not in result.stderr  # refused before the first model loads
    _nothing_written(tmp_path)


def test_the_hint_repairs_a_damaged_run_folder(sound_run, tmp_path):
    """Following the hint (resume from the newest sound checkpoint) makes the folder usable again."""
    from sftkit.runs import run_folder_problem

    run = _damaged(sound_run, tmp_path, "adapter_model_truncated.safetensors", "adapter_model.safetensors")
    assert run_folder_problem(run) is not None
    result = run_cli("train", run / "recipe.yaml", "--output-dir", run, "--resume", "latest-valid")
    assert result.exit_code == 0, result.stderr
    assert run_folder_problem(run) is None
    info = json.loads((run / "sftkit_run.json").read_text("utf-8"))
    assert info["sha256"]["adapter_model.safetensors"] == hashlib.sha256(
        (run / "adapter_model.safetensors").read_bytes()).hexdigest()


def test_a_damaged_folder_without_checkpoints_says_to_train_again(sound_run, tmp_path):
    run = _damaged(sound_run, tmp_path, "adapter_config_garbled.json", "adapter_config.json")
    shutil.rmtree(run / "checkpoints")
    result = run_cli("export", run, tmp_path / "exported")
    assert_one_clean_error(result, "adapter_config.json is damaged",
                           f"hint: train it again (sftkit train {run / 'recipe.yaml'} --output-dir {run} --overwrite); "
                           f"the folder has no checkpoints to finish it from")


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unfinished_run_says_how_to_finish_it(sound_run, tmp_path, command):
    run = _damaged(sound_run, tmp_path, None, "sftkit_run.json")
    result = _open(command, run, tmp_path)
    assert_one_clean_error(result, f"{run} is an sftkit run that did not finish (it has no sftkit_run.json",
                           f"hint: finish it from its newest checkpoint: sftkit train --output-dir {run} --resume "
                           f"latest-valid")
    _nothing_written(tmp_path)


@pytest.mark.parametrize("command", ["eval", "chat"])
def test_a_folder_that_is_no_model_is_one_message(tmp_path, command):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model")
    result = _open(command, folder, tmp_path)
    assert_one_clean_error(result, f"{folder} is a folder but not a model: it has no config.json")


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage, fragment", [
    (lambda run: _truncate(run / "model.safetensors"), "model.safetensors is truncated ("),
    (lambda run: (run / "config.json").unlink(), "config.json is missing"),
    (lambda run: (run / "model.safetensors").write_bytes(b"\x10" + (run / "model.safetensors").read_bytes()[1:]),
     "model.safetensors has a garbled safetensors header"),
], ids=["weights truncated", "config missing", "header length changed"])
def test_a_damaged_full_run_is_one_message(full_run, tmp_path, damage, fragment):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    damage(run)
    result = run_cli("export", run, tmp_path / "exported")
    assert_one_clean_error(result, f"cannot use the run folder {run}: {run}/{fragment}")
    _nothing_written(tmp_path)


def test_safetensors_problem_reads_only_the_header(tmp_path):
    """The checks compute what a whole file needs from its header: 8 bytes, the header, the data."""
    from sftkit.integrity import safetensors_problem

    header = json.dumps({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}).encode()
    whole = struct.pack("<Q", len(header)) + header + b"\x00" * 12
    file = tmp_path / "w.safetensors"
    file.write_bytes(whole)
    assert safetensors_problem(file) is None
    file.write_bytes(whole[:-1])
    assert safetensors_problem(file) == f"{file} is truncated ({len(whole) - 1:,} of {len(whole):,} bytes)"
    file.write_bytes(whole[:20])
    assert safetensors_problem(file) == f"{file} is truncated (20 bytes, its header alone needs {8 + len(header):,})"
    file.write_bytes(whole[:5])
    assert safetensors_problem(file) == f"{file} is truncated (5 bytes, too short for a safetensors header)"


# -- full disks ----------------------------------------------------------------------------------------

def disk_full_after(monkeypatch, name_part: str, limit: int) -> list[str]:
    """Atomic writes of a file whose name holds ``name_part`` fail with ENOSPC after ``limit``
    bytes (those reach the temporary file, as on a disk that fills up); returns the temporary
    files that failed."""
    from sftkit import io as sio

    real = os.fdopen
    failed: list[str] = []

    class FullDisk:
        def __init__(self, handle, name):
            self.handle, self.name, self.written = handle, name, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            room = limit - self.written
            if len(data) > room:
                self.handle.write(data[:max(room, 0)])
                self.handle.flush()
                failed.append(self.name)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(data)
            return self.handle.write(data)

        def __getattr__(self, name):
            return getattr(self.handle, name)

    def fdopen(fd, *args, **kwargs):
        handle = real(fd, *args, **kwargs)
        name = os.readlink(f"/proc/self/fd/{fd}")
        return FullDisk(handle, name) if name_part in Path(name).name else handle

    monkeypatch.setattr(sio.os, "fdopen", fdopen)
    return failed


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_validate_on_a_disk_that_fills_up_keeps_the_earlier_reports_whole(tmp_path, monkeypatch):
    folder = tmp_path / "reports"
    result = run_cli("validate", DATA, "--spec", SPEC, "--no-tokenizer", "--report-dir", folder, "--only", "schema")
    assert result.exit_code == 0, result.stderr
    old = _files(folder)
    assert sorted(old) == ["validate.html", "validate.json"]
    failed = disk_full_after(monkeypatch, "validate.html", 4096)  # the HTML is written first
    result = run_cli("validate", BAD / "crlf.jsonl", "--no-tokenizer", "--report-dir", folder,
                     "--json", tmp_path / "copy.json")
    assert failed  # the full disk was hit
    assert_one_clean_error(result, f"cannot write {folder / 'validate.html'}: No space left on device (ENOSPC)",
                           "no partial file is left", "hint: the disk is full")
    assert _files(folder) == old  # no new HTML beside an old JSON, no temporary file
    assert not (tmp_path / "copy.json").exists()


def test_validate_json_copy_on_a_full_disk_replaces_no_report(tmp_path, monkeypatch):
    folder = tmp_path / "reports"
    result = run_cli("validate", DATA, "--spec", SPEC, "--no-tokenizer", "--report-dir", folder, "--only", "schema")
    assert result.exit_code == 0, result.stderr
    old = _files(folder)
    disk_full_after(monkeypatch, "copy.json", 100)
    result = run_cli("validate", BAD / "crlf.jsonl", "--no-tokenizer", "--report-dir", folder,
                     "--json", tmp_path / "copy.json")
    assert_one_clean_error(result, f"cannot write {tmp_path / 'copy.json'}: No space left on device (ENOSPC)")
    assert _files(folder) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]


@pytest.mark.parametrize("name_part", ["eval.json", "eval.html"])
def test_eval_on_a_disk_that_fills_up_keeps_the_earlier_reports_whole(tmp_path, monkeypatch, name_part):
    folder = tmp_path / "reports"
    args = ("eval", "--model", "tiny-random", "--data", DATA, "--spec", SPEC, "--limit", "2", "--max-new-tokens", "2",
            "--resamples", "100", "--no-compare", "--report-dir", folder)
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    old = _files(folder)
    assert sorted(old) == ["eval.html", "eval.json"]
    failed = disk_full_after(monkeypatch, name_part, 1000)
    result = run_cli(*args, "--seed", "7")
    assert failed
    assert_one_clean_error(result, f"cannot write {folder / name_part}: No space left on device (ENOSPC)",
                           "hint: the disk is full")
    assert _files(folder) == old


def test_eval_of_a_run_whose_card_cannot_be_written_is_exit_2(sound_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(sound_run, run)
    card = (run / "README.md").read_bytes()
    disk_full_after(monkeypatch, "README.md", 10)
    result = run_cli("eval", "--model", run, "--data", DATA, "--limit", "2", "--max-new-tokens", "2",
                     "--resamples", "100", "--no-compare", "--report-dir", tmp_path / "reports")
    assert_one_clean_error(result, f"cannot write {run / 'README.md'}: No space left on device (ENOSPC)",
                           "the file already there is unchanged")
    assert (run / "README.md").read_bytes() == card
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def _no_temporary_files(run: Path) -> None:
    left = [p for p in run.rglob("*") if p.name.startswith((".tmp-", ".")) and p.name != ".sftkit-run.lock"]
    assert left == [], left


def test_train_on_a_full_disk_at_the_final_save_leaves_no_finished_looking_folder(tmp_path, monkeypatch):
    """tokenizers (Rust) fails a write with a plain Exception "... (os error 28)": still exit 2."""
    from sftkit.models import load_tokenizer
    from sftkit.runs import run_folder_problem

    backend = type(load_tokenizer("tiny-random"))
    real = backend.save_pretrained
    calls = []

    def full(self, folder, *args, **kwargs):
        calls.append(folder)
        Path(folder, "tokenizer.json").write_text('{"version": "1.0", "trunc', "utf-8")  # half written
        raise Exception("No space left on device (os error 28)")  # noqa: TRY002 - what tokenizers raises

    monkeypatch.setattr(backend, "save_pretrained", full)
    run = tmp_path / "run"
    result = _train(run, "--save-steps", "1")
    assert calls, "the tokenizer's save_pretrained was not called"
    assert_one_clean_error(result, f"cannot write the final model {run}: No space left on device (ENOSPC); the partial "
                                   f"{calls[0]} was removed; the run folder {run} is not a finished run (no "
                                   f"sftkit_run.json)",
                           f"hint: the disk is full: free some space, or write to another folder; then `sftkit train "
                           f"--output-dir {run} --resume` finishes the run from checkpoint-1")
    assert not (run / "sftkit_run.json").exists() and not (run / "adapter_model.safetensors").exists()
    assert not (run / "tokenizer.json").exists()
    _no_temporary_files(run)
    assert "did not finish" in run_folder_problem(run)
    # Following the hint once there is room again finishes the run.
    monkeypatch.setattr(backend, "save_pretrained", real)
    result = run_cli("train", "--output-dir", run, "--resume")
    assert result.exit_code == 0, result.stderr
    assert run_folder_problem(run) is None


def test_export_on_a_full_disk_leaves_no_export(sound_run, tmp_path, monkeypatch):
    from sftkit.models import load_tokenizer

    def full(self, folder, *args, **kwargs):
        Path(folder, "tokenizer.json").write_text('{"version": ', "utf-8")
        raise Exception("No space left on device (os error 28)")  # noqa: TRY002 - what tokenizers raises

    monkeypatch.setattr(type(load_tokenizer("tiny-random")), "save_pretrained", full)
    out = tmp_path / "exported"
    result = run_cli("export", sound_run, out)
    assert_one_clean_error(result, f"cannot write the export {out}: No space left on device (ENOSPC); the partial "
                                   f"{tmp_path}/.tmp-export-exported-", "hint: the disk is full")
    assert list(tmp_path.iterdir()) == []


def test_train_on_a_full_disk_during_a_checkpoint_removes_the_partial_checkpoint(tmp_path, monkeypatch):
    import torch

    from sftkit.train.checkpoints import checkpoint_problem

    real = torch.save
    calls = []

    def full(obj, f, *args, **kwargs):
        calls.append(str(f))
        if "checkpoint-2" in str(f):
            Path(f).write_bytes(b"PK\x03\x04half")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full)
    run = tmp_path / "run"
    result = run_cli("train", "--data", DATA, "--spec", SPEC, "--model", "tiny-random", "--max-steps", "4",
                     "--batch-size", "4", "--no-validate", "--save-steps", "1", "--output-dir", run)
    assert any("checkpoint-2" in c for c in calls)
    assert_one_clean_error(result, f"cannot write the checkpoint {run / 'checkpoints' / 'checkpoint-2'}: ",
                           f"the partial {run / 'checkpoints' / '.tmp-checkpoint-2'} was removed",
                           f"the run folder {run} is not a finished run (no sftkit_run.json)",
                           f"hint: the disk is full: free some space, or write to another folder; then `sftkit train "
                           f"--output-dir {run} --resume` finishes the run from checkpoint-1")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-1"]
    assert checkpoint_problem(run / "checkpoints" / "checkpoint-1") is None
    assert not (run / "sftkit_run.json").exists()


@pytest.mark.parametrize("name_part, limit", [("sftkit_run.json", 200), ("train.json", 500), ("train.html", 2000)])
def test_train_on_a_disk_that_fills_up_writing_the_run_files_is_exit_2(tmp_path, monkeypatch, name_part, limit):
    from sftkit.runs import run_folder_problem

    failed = disk_full_after(monkeypatch, name_part, limit)
    run = tmp_path / "run"
    result = _train(run, "--save-steps", "1")
    assert failed
    assert_one_clean_error(result, f"cannot write {run / name_part}: No space left on device (ENOSPC)",
                           f"the run folder {run} is not a finished run (no sftkit_run.json)",
                           f"--output-dir {run} --resume` finishes the run from checkpoint-1")
    assert not (run / "sftkit_run.json").exists() and not (run / name_part).exists()
    _no_temporary_files(run)
    assert "did not finish" in run_folder_problem(run)


def test_a_rust_library_error_carrying_an_os_error_is_recognised_and_others_stay_bugs():
    from sftkit.errors import os_error_in

    for text, code in (("No space left on device (os error 28)", errno.ENOSPC),
                       (('Error while serializing: IoError(Os { code: 122, kind: QuotaExceeded, message: "Disk '
                         'quota exceeded" })'), errno.EDQUOT),
                       ("Read-only file system (os error 30)", errno.EROFS)):
        found = os_error_in(Exception(text))
        assert found is not None and found.errno == code and found.strerror == os.strerror(code)
    assert os_error_in(Exception("No such file or directory (os error 2)")) is None  # ENOENT: not the machine's
    assert os_error_in(ValueError("data did not match any variant")) is None


# -- the corpus ------------------------------------------------------------------------------------------

def test_every_round3_corpus_file_has_a_case():
    covered = {c[1] for c in CASES if c[1]}
    files = {p.name for p in ROUND3.iterdir() if p.is_file()}
    assert files == covered
    assert len(files) == 20


def test_the_readme_states_the_number_of_bad_inputs():
    text = " ".join((HERE.parent / "README.md").read_text("utf-8").split())
    top, round2, round3 = (len([p for p in folder.iterdir() if p.is_file()]) for folder in (BAD, BAD / "round2", ROUND3))
    assert (f"holds {top + round2 + round3} bad inputs, each with a test: {top} files at its top and {round2} in "
            f"`tests/data/bad/round2/` (data files, specs, recipes), and {round3} in `tests/data/bad/round3/`") in text


@pytest.fixture
def scratch_run(sound_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(sound_run, run)
    return run


def test_any_value_in_a_run_description_exits_0_1_or_2(scratch_run):
    """Arbitrary values (NaN, huge numbers, control characters, lists, mappings, the wrong type)
    for every key of ``sftkit_run.json``, through ``sftkit eval``: never an internal error."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from test_value_properties import SCALE, VALUES

    from sftkit.runs import RUN_KEYS

    original = json.loads((scratch_run / "sftkit_run.json").read_text("utf-8"))

    @settings(max_examples=int(30 * SCALE), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(key=st.sampled_from(RUN_KEYS), value=VALUES)
    def check(key, value):
        (scratch_run / "sftkit_run.json").write_text(json.dumps({**original, key: value}), "utf-8")
        result = run_cli("eval", "--model", scratch_run, "--data", DATA, "--limit", "1", "--max-new-tokens", "1",
                         "--resamples", "100", "--no-compare", "--report-dir", scratch_run.parent / "reports")
        output = result.stdout + result.stderr
        assert result.exit_code in (0, 1, 2), (key, value, output)
        assert "Traceback" not in output and "internal error" not in output, (key, value, output)
        if result.exit_code == 2:
            assert result.stderr.count("error:") == 1, output

    check()
