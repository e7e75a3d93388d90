"""Reliability, round two (issue 18): files that are not what they claim, spec YAML of the
wrong shape, loader options by value, misleading messages, and writes that fail.

The corpus is ``tests/data/bad/round2/`` (FIFOs, devices and sparse giants are made here).
Every case: exit 2, one message naming the file (and the line, the key or the option), no
traceback, no "internal error", and no report written.
"""
from __future__ import annotations

import errno
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sftkit.errors import DataError, SftkitError, UsageError, WriteError
from conftest import assert_one_clean_error, read_records, squash

BAD = Path(__file__).resolve().parent / "data" / "bad"
ROUND2 = BAD / "round2"


def assert_no_report(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    assert not reports.exists() or list(reports.iterdir()) == []
    assert not (tmp_path / "v.json").exists()


def validate(run_cli, tmp_path, data, *args):
    return run_cli("validate", data, "--no-tokenizer", "--report-dir", tmp_path / "reports",
                   "--json", tmp_path / "v.json", *args)


# -- files that are not what they claim, and misleading messages: (file, options, fragment, line) ---------
FILES = [
    ("corrupt_page.parquet", (), "corrupt or unreadable Parquet data in row group 1 (rows from 10)", None),
    ("truncated.parquet", (), "not a readable Parquet file", None),
    ("cr_only.csv", (), "the file uses old Mac line ends (CR only)", 1),
    ("cr_only.jsonl", (), "old Mac line ends (CR only)", 1),
    ("bom_middle.csv", (), "a byte order mark (BOM, U+FEFF) starts the line", 3),
    ("bom_middle.jsonl", (), "a byte order mark (BOM, U+FEFF) starts the line", 2),
    ("gzipped.jsonl", (), "the file holds gzip-compressed data, not JSON Lines text", None),
    ("parquet_named.jsonl", (), "the file holds a Parquet file, not JSON Lines text", None),
    ("utf16.csv", (), "the file holds UTF-16 text, not CSV text", None),
    ("zeros.jsonl", (), "the file holds binary data (it starts with a NUL byte)", None),
    ("zip_named.csv", (), "the file holds a ZIP archive, not CSV text", None),
    ("long_line.jsonl", ("--loader-option", "max_line_bytes=10000"), "the line is longer than the limit of 10000 bytes (9.8 KiB) for one line", 2),
]
HINTS = {
    "cr_only.csv": "tr '\\r' '\\n'", "cr_only.jsonl": "tr '\\r' '\\n'", "gzipped.jsonl": "gunzip",
    "parquet_named.jsonl": "--loader parquet", "utf16.csv": "iconv", "long_line.jsonl": "max_line_bytes=N",
    "bom_middle.csv": "EF BB BF", "corrupt_page.parquet": "damaged",
}


@pytest.mark.parametrize("name, options, fragment, line", FILES, ids=[c[0] for c in FILES])
def test_files_that_are_not_what_they_claim_exit_2_naming_the_file(run_cli, tmp_path, name, options, fragment, line):
    path = ROUND2 / name
    result = validate(run_cli, tmp_path, path, *options)
    assert_one_clean_error(result, fragment, f"{path}{', line %d' % line if line else ''}:")
    if name in HINTS:
        assert squash(HINTS[name]) in squash(result.stderr)
    assert result.stdout == ""
    assert_no_report(tmp_path)


def test_a_bom_in_the_middle_of_a_csv_is_a_skippable_line_like_in_jsonl():
    skipped: list = []
    records = list(read_records(ROUND2 / "bom_middle.csv", skip_invalid=True, skipped=skipped))
    assert records == [{"instruction": "Name a colour.", "output": "Blue"},
                       {"instruction": "Name a fruit.", "output": "Apple"}]
    assert [e.line for e in skipped] == [3]
    skipped = []
    records = list(read_records(ROUND2 / "bom_middle.jsonl", skip_invalid=True, skipped=skipped))
    assert len(records) == 1 and [e.line for e in skipped] == [2]


def test_old_mac_line_ends_are_refused_even_with_skip_invalid():
    with pytest.raises(DataError, match="old Mac line ends"):
        list(read_records(ROUND2 / "cr_only.csv", skip_invalid=True))


def test_the_rows_before_a_corrupt_parquet_page_are_not_passed_off_as_the_whole_file():
    rows = []
    with pytest.raises(DataError) as caught:
        for record in read_records(ROUND2 / "corrupt_page.parquet"):
            rows.append(record)
    assert len(rows) == 10 and "row group 1" in caught.value.message


# -- special files made here: folders, FIFOs, devices, giants ------------------------------------------
def _cli(*args, timeout=60):
    """The real command in a subprocess (a hang would fail this test, not freeze the suite)."""
    env = {**os.environ, "SFTKIT_NO_PROGRESS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "sftkit", *map(str, args)], capture_output=True, timeout=timeout,
                          env=env)


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "data.jsonl"
    os.mkfifo(path)
    return path


def test_a_fifo_is_refused_at_once_not_waited_on(fifo, tmp_path):
    start = time.monotonic()
    done = _cli("validate", fifo, "--no-tokenizer", "--report-dir", tmp_path / "reports")
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - start < 50
    err = done.stderr.decode()
    assert squash(f"{fifo}: is a named pipe (FIFO), not a regular file") in squash(err)
    assert "Traceback" not in err and not (tmp_path / "reports").exists()


@pytest.mark.parametrize("loader", ["jsonl", "json", "csv", "tsv", "parquet"])
def test_dev_zero_is_refused_quickly_by_every_loader(loader, tmp_path):
    start = time.monotonic()
    done = _cli("validate", "/dev/zero", "--loader", loader, "--no-tokenizer", "--report-dir", tmp_path / "r")
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - start < 50
    assert squash("/dev/zero: is a character device, not a regular file") in squash(done.stderr.decode())


def test_a_link_to_a_device_and_a_folder_named_like_a_file_are_refused(run_cli, tmp_path):
    link = tmp_path / "zero.jsonl"
    link.symlink_to("/dev/zero")
    result = validate(run_cli, tmp_path, link)
    assert_one_clean_error(result, f"{link}: is a character device, not a regular file")
    folder = tmp_path / "data.jsonl"
    folder.mkdir()
    result = validate(run_cli, tmp_path, folder)
    assert_one_clean_error(result, f"{folder}: is a folder, not a file")
    assert_no_report(tmp_path)


def test_the_hf_disk_loader_wants_a_folder(run_cli, tmp_path):
    result = validate(run_cli, tmp_path, BAD / "bom.jsonl", "--loader", "hf_disk")
    assert_one_clean_error(result, f"{BAD / 'bom.jsonl'}: is a regular file, but a folder is needed")


def test_a_huge_json_array_is_refused_before_it_is_read(run_cli, tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as handle:  # sparse: 3 GiB on paper, nothing on disk
        handle.write(b"[")
        handle.truncate(3 * 2**30)
    start = time.monotonic()
    result = validate(run_cli, tmp_path, path)
    assert time.monotonic() - start < 30
    assert_one_clean_error(result, f"{path}: the file is 3 GiB, more than the limit of 2 GiB", "--loader-option max_bytes=N")
    small = validate(run_cli, tmp_path, BAD.parent / "fixtures" / "alpaca_small.json", "--loader-option", "max_bytes=100")
    assert_one_clean_error(small, "more than the limit of 100 bytes for reading a file whole")


def test_a_spec_that_is_a_fifo_or_a_folder_is_refused(run_cli, tmp_path):
    spec = tmp_path / "spec.yaml"
    os.mkfifo(spec)
    done = _cli("validate", BAD / "bom.jsonl", "--spec", spec, "--no-tokenizer", "--report-dir", tmp_path / "r")
    assert done.returncode == 2
    assert squash(f"spec file {spec} does not exist as a regular file: it is a named pipe (FIFO)") in squash(
        done.stderr.decode())
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    result = validate(run_cli, tmp_path, BAD / "bom.jsonl", "--spec", folder)
    assert_one_clean_error(result, f"spec file {folder} does not exist as a regular file: it is a folder")


def test_an_unreadable_file_is_cannot_read_with_the_reason(monkeypatch, tmp_path):
    from sftkit import io as sio

    path = tmp_path / "x.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n')

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(DataError) as caught:
        sio.open_for_reading(path)
    assert caught.value.message == f"{path}: cannot read: Permission denied (EACCES)"


def test_library_errors_of_a_broken_file_become_one_message_naming_it(tmp_path):
    import pyarrow as pa

    from sftkit.io import reading

    for exc in (json.JSONDecodeError("Expecting value", "x", 0), pa.ArrowInvalid("bad page"),
                UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), EOFError("ran out of input")):
        with pytest.raises(DataError) as caught, reading(tmp_path / "m.bin", "model file", row=3):
            raise exc
        assert caught.value.message.startswith(f"{tmp_path / 'm.bin'}, row 3: not a readable model file (")
    with pytest.raises(DataError, match="cannot read: No space left"), reading(tmp_path / "m.bin"):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(DataError, match="not a readable checkpoint"), reading("c.pt", "checkpoint", also=(RuntimeError,)):
        raise RuntimeError("PytorchStreamReader failed reading zip archive")
    with pytest.raises(KeyError), reading("x"):  # anything else is a bug, and stays one
        raise KeyError("x")


# -- spec YAML of the wrong shape: (file, data, fragment naming the key, hint) ----------------------------
DATA = BAD / "bom.jsonl"
SPECS = [
    ("spec_template_number.yaml", DATA, "field 'template': template must be text, got a number (3)", None),
    ("spec_template_list.yaml", DATA, "field 'template': template must be text, got a list", None),
    ("spec_loader_mapping.yaml", DATA, "field 'loader': loader must be text, got a mapping", None),
    ("spec_validators_number.yaml", DATA, "field 'validators': validators must be a mapping", None),
    ("spec_validator_options_list.yaml", DATA, "validators.quality must be a mapping of options to values, got a list",
     None),
    ("spec_deeply_nested.yaml", DATA, "line 2: YAML nested deeper than 100 levels", None),
    ("spec_deeply_nested_list.yaml", DATA, "line 2: YAML nested deeper than 100 levels", None),
    ("spec_severity_on.yaml", DATA, "field 'severity': severity.exact_duplicate is a boolean (true)",
     "write the level, e.g. exact_duplicate: warning"),
    ("spec_labels_yes_no.yaml", DATA, "field 'labels': labels must be a list of strings, but one is the boolean true",
     "labels: ['yes', 'no']"),
    ("spec_bad_date.yaml", DATA, "invalid YAML value: month must be in 1..12", "quote a value"),
    ("spec_control_char.yaml", DATA, "line 3: invalid YAML: unacceptable character #x001b", None),
    ("spec_columns_list.yaml", DATA, "field 'columns': columns.output must name one source column (text), got a list",
     None),
    ("spec_constraints_text.yaml", DATA, "constraints.output.min_length must be a whole number of 0 or more, got the "
                                         "text 'many'", None),
    ("spec_loader_options_nested.yaml", DATA, "field 'loader_options': loader_options.delimiter must be a single value",
     None),
    ("spec_system_list.yaml", DATA, "field 'system': system must be text, got a list", None),
    ("spec_task_mapping.yaml", DATA, "field 'task': task must be one of generation", None),
]


@pytest.mark.parametrize("name, data, fragment, hint", SPECS, ids=[c[0] for c in SPECS])
def test_spec_values_of_the_wrong_shape_name_the_spec_and_the_key(run_cli, tmp_path, name, data, fragment, hint):
    from sftkit.spec import load_spec

    path = ROUND2 / name
    with pytest.raises(DataError) as caught:
        load_spec(str(path))
    assert caught.value.path == str(path)
    result = validate(run_cli, tmp_path, data, "--spec", path)
    assert_one_clean_error(result, f"{path}", fragment, *([hint] if hint else []))
    assert result.stdout == ""
    assert_no_report(tmp_path)
    preview = run_cli("preview", data, "--spec", path, "--model", "tiny-random", "--format", "json")
    assert_one_clean_error(preview, fragment)


def test_an_unquoted_off_or_false_in_severity_means_off(run_cli, tmp_path):
    data = tmp_path / "d.jsonl"
    row = json.dumps({"instruction": "Name a colour, please.", "output": "Blue"})
    data.write_text("\n".join([row, row, json.dumps({"instruction": "Say nothing at all.", "output": ""})]) + "\n")
    spec = ROUND2 / "spec_severity_off.yaml"
    from sftkit.spec import load_spec

    assert load_spec(str(spec)).severity == {"exact_duplicate": "off", "empty_output": "off"}
    result = run_cli("validate", data, "--spec", spec, "--no-tokenizer", "--report-dir", tmp_path / "r",
                     "--json", tmp_path / "v.json")
    assert result.exit_code == 0, result.stderr
    codes = {issue["code"] for issue in json.loads((tmp_path / "v.json").read_text())["issues"]}
    assert "exact_duplicate" not in codes and "empty_output" not in codes
    # Without the spec both are found: the spec really turned them off.
    result = run_cli("validate", data, "--no-tokenizer", "--report-dir", tmp_path / "r", "--json", tmp_path / "w.json")
    codes = {issue["code"] for issue in json.loads((tmp_path / "w.json").read_text())["issues"]}
    assert {"exact_duplicate", "empty_output"} <= codes


def test_spec_shape_checks_keep_every_builtin_spec_valid():
    from sftkit.spec import builtin_spec_names, load_spec, spec_from_dict

    for name in builtin_spec_names():
        spec = load_spec(name)
        assert spec_from_dict(spec.to_dict(), spec.source) == spec


# -- loader options by value: (data, loader options, fragment) --------------------------------------------
PARQUET = BAD / "wrong_types.parquet"
CSV = BAD / "quotes_newlines.csv"
OPTIONS = [
    (PARQUET, ["batch_size=0"], "loader 'parquet' (plugin loaders): option batch_size must be at least 1, got 0"),
    (PARQUET, ["batch_size=-3"], "option batch_size must be at least 1, got -3"),
    (CSV, ["delimiter="], "loader 'csv' (plugin loaders): option delimiter must be exactly one character"),
    (CSV, ["delimiter=;;"], "option delimiter must be exactly one character (e.g. ',' or ';'; tabs: the tsv loader), "
                            "got ';;'"),
    (CSV, ['delimiter="'], "option delimiter must be one character other than a quote"),
    (CSV, ["delimiter=x"], "option delimiter must be one character other than a quote, a line end, a letter"),
    (CSV, ["encoding_errors=ignore"], "loader 'csv' (plugin loaders): option encoding_errors must be one of strict, replace, got 'ignore'"),
    (CSV, ["max_line_bytes=0"], "loader 'csv' (plugin loaders): option max_line_bytes must be at least 1, got 0"),
    (DATA, ["encoding_errors=skip"], "loader 'jsonl' (plugin loaders): option encoding_errors must be one of strict, replace"),
    (DATA, ["max_line_bytes=-1"], "loader 'jsonl' (plugin loaders): option max_line_bytes must be at least 1, got -1"),
    (BAD / "two_arrays.json", ["max_bytes=0"], "loader 'json' (plugin loaders): option max_bytes must be at least 1, got 0"),
]


@pytest.mark.parametrize("data, options, fragment", OPTIONS, ids=[f"{c[0].suffix}:{c[1][0]}" for c in OPTIONS])
def test_loader_options_are_checked_by_value(run_cli, tmp_path, data, options, fragment):
    flags = [arg for option in options for arg in ("--loader-option", option)]
    result = validate(run_cli, tmp_path, data, *flags)
    assert_one_clean_error(result, fragment, "hint: pass --loader-option")
    assert_no_report(tmp_path)


@pytest.mark.parametrize("name, data, fragment", [
    ("spec_csv_delimiter_empty.yaml", CSV, "loader 'csv' (plugin loaders): option delimiter must be exactly one character"),
    ("spec_csv_delimiter_long.yaml", CSV, "option delimiter must be exactly one character"),
    ("spec_parquet_batch_zero.yaml", PARQUET, "loader 'parquet' (plugin loaders): option batch_size must be at least "
                                              "1, got 0"),
    ("spec_parquet_batch_negative.yaml", PARQUET, "got -5"),
])
def test_loader_options_from_a_spec_are_checked_by_value(run_cli, tmp_path, name, data, fragment):
    result = validate(run_cli, tmp_path, data, "--spec", ROUND2 / name)
    assert_one_clean_error(result, fragment)
    assert_no_report(tmp_path)


def test_loader_options_of_the_wrong_type_from_a_spec_are_refused():
    """Typed values (from a spec's YAML) are checked by the loaders' declarations when bound."""
    from sftkit.testing import fresh_registry

    loaders = fresh_registry().components("loaders")
    cases = [("hf_disk", "split", 3, "option split must be text, got 3"),
             ("parquet", "batch_size", 1.5, "option batch_size must be an integer from 1 to 16777216, got 1.5"),
             ("parquet", "batch_size", True, "option batch_size must be an integer from 1 to 16777216, got True"),
             ("json", "key", ["train"], "option key must be text, got ['train']"),
             ("csv", "delimiter", 5, "option delimiter must be text, got 5")]
    for loader, option, value, fragment in cases:
        with pytest.raises(UsageError) as caught:
            loaders[loader].bind({option: value}, sources={option: "the spec s.yaml, key loader_options." + option})
        assert fragment in caught.value.message, caught.value.message
        assert caught.value.message.endswith(f"(from the spec s.yaml, key loader_options.{option})")


# -- writing: up-front checks --------------------------------------------------------------------------
def test_check_writable_dir_accepts_a_new_folder_and_leaves_nothing_behind(tmp_path):
    from sftkit.io import check_writable_dir

    target = tmp_path / "a" / "b" / "reports"
    assert check_writable_dir(target, "--report-dir") == target
    assert list(tmp_path.iterdir()) == []  # the folders made for the test are gone again
    existing = tmp_path / "r"
    existing.mkdir()
    check_writable_dir(existing, "--report-dir")
    assert list(existing.iterdir()) == []


@pytest.mark.parametrize("make, fragment", [
    (lambda t: Path("/proc/sftkit-reports"), "--report-dir /proc/sftkit-reports: cannot create the folder"),
    (lambda t: Path("/proc/self/status"), "--report-dir /proc/self/status is a regular file, not a folder"),
    (lambda t: Path("/sys/sftkit/reports"), "--report-dir /sys/sftkit/reports: cannot create the folder"),
])
def test_check_writable_dir_refuses_what_cannot_be_written(tmp_path, make, fragment):
    from sftkit.io import check_writable_dir

    with pytest.raises(WriteError) as caught:
        check_writable_dir(make(tmp_path), "--report-dir")
    assert caught.value.message.startswith(fragment), caught.value.message


def test_check_writable_dir_refuses_a_file_in_the_way_and_a_full_disk(tmp_path):
    from sftkit.io import check_writable_dir

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WriteError, match=f"{re.escape(str(blocker))} is a file, not a folder"):
        check_writable_dir(blocker / "reports", "--report-dir")
    with pytest.raises(WriteError, match="free on the file system"):
        check_writable_dir(tmp_path, "--output-dir", min_free=2**62)


def test_check_writable_file_refuses_folders_fifos_devices_inputs_and_proc(tmp_path):
    from sftkit.io import check_writable_file, clear_protected, protect_inputs

    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    cases = [(tmp_path, "is a folder"), (fifo, "is a named pipe (FIFO), not a regular file"),
             (Path("/dev/null"), "is a character device, not a regular file"),
             (Path("/proc/sftkit.json"), "--json /proc/sftkit.json: cannot write in /proc"),
             (tmp_path / "f" / "x.json", "cannot create the folder")]
    (tmp_path / "f").write_text("")
    cases[-1] = (tmp_path / "f" / "x.json", f"{tmp_path / 'f'} is a regular file, not a folder")
    for path, fragment in cases:
        with pytest.raises(WriteError) as caught:
            check_writable_file(path, "--json")
        assert fragment in caught.value.message, caught.value.message
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n")
    protect_inputs([data])
    try:
        with pytest.raises(UsageError, match="is the input file"):
            check_writable_file(data, "--json")
    finally:
        clear_protected()
    assert check_writable_file(tmp_path / "new" / "v.json", "--json") == tmp_path / "new" / "v.json"
    assert not (tmp_path / "new").exists()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# -- writing: a failed write is one message, no partial file, nothing stale ------------------------------
def _fail_fsync_for(monkeypatch, name_part: str, code: int = errno.ENOSPC) -> None:
    """Make fsync fail with ``code`` for the temp file of a target whose name holds ``name_part``."""
    real = os.fsync

    def fsync(fd):
        if name_part in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_during_a_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    from sftkit.io import atomic_write_text

    path = tmp_path / "report.json"
    path.write_text("old")
    _fail_fsync_for(monkeypatch, "report.json")
    with pytest.raises(WriteError) as caught:
        atomic_write_text(path, "new" * 1000)
    message = caught.value.message
    assert message.startswith(f"cannot write {path}: No space left on device (ENOSPC)")
    assert "no partial file is left" in message and caught.value.path == str(path)
    assert caught.value.exit_code == 2 and "free some space" in caught.value.hint
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_write_that_fails_half_way_leaves_no_partial_file(tmp_path, monkeypatch):
    from sftkit import io as sio

    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(sio.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(WriteError, match="No space left on device"):
        sio.atomic_write_bytes(tmp_path / "new.html", b"x" * 100000)
    assert list(tmp_path.iterdir()) == []


def test_read_only_and_forbidden_targets_are_write_errors(tmp_path, monkeypatch):
    from sftkit.io import atomic_write_text

    with pytest.raises(WriteError, match="cannot write /proc/sftkit-x/r.json"):
        atomic_write_text("/proc/sftkit-x/r.json", "{}")
    for code, reason in ((errno.EROFS, "Read-only file system (EROFS)"), (errno.EACCES, "Permission denied (EACCES)"),
                         (errno.EDQUOT, "(EDQUOT)")):
        _fail_fsync_for(monkeypatch, "r.json", code)
        with pytest.raises(WriteError) as caught:
            atomic_write_text(tmp_path / "r.json", "{}")
        assert reason in caught.value.message
    assert list(tmp_path.iterdir()) == []


def _write_old_reports(run_cli, folder: Path) -> dict[str, bytes]:
    result = run_cli("validate", BAD / "bom.jsonl", "--no-tokenizer", "--report-dir", folder, "--only", "schema")
    assert result.exit_code == 0, result.stderr
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_validate_on_a_full_disk_exits_2_and_leaves_no_stale_report_beside_a_new_one(run_cli, tmp_path, monkeypatch):
    folder = tmp_path / "reports"
    old = _write_old_reports(run_cli, folder)
    assert sorted(old) == ["validate.html", "validate.json"]
    _fail_fsync_for(monkeypatch, "validate.json")  # the HTML (written first) succeeds, the JSON does not
    result = run_cli("validate", BAD / "crlf.jsonl", "--no-tokenizer", "--report-dir", folder)
    assert_one_clean_error(result, f"cannot write {folder / 'validate.json'}: No space left on device (ENOSPC)",
                           "no report of this run was written", "from an earlier run", "hint: the disk is full")
    # Both reports are still the earlier run's, whole: never a new HTML beside an old JSON.
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == old


def test_a_failed_rename_of_one_report_says_which_were_replaced(tmp_path, monkeypatch):
    from sftkit.io import atomic_write_text, staged_writes

    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(WriteError) as caught:
        with staged_writes():
            atomic_write_text(tmp_path / "a.html", "a")
            atomic_write_text(tmp_path / "b.json", "b")
            assert list(tmp_path.glob("*.html")) == []  # nothing renamed before the block ends
    assert f"already replaced: {tmp_path / 'a.html'}" in caught.value.message
    assert caught.value.replaced == [str(tmp_path / "a.html")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html"]


def test_an_error_inside_a_staged_block_writes_nothing(tmp_path):
    from sftkit.io import atomic_write_text, staged_writes

    (tmp_path / "a.html").write_text("old")
    with pytest.raises(KeyError):
        with staged_writes():
            atomic_write_text(tmp_path / "a.html", "new")
            atomic_write_text(tmp_path / "b.json", "new")
            raise KeyError("a reporter failed")
    assert [(p.name, p.read_text()) for p in tmp_path.iterdir()] == [("a.html", "old")]


@pytest.mark.parametrize("flag, target, fragment", [
    ("--json", "/proc/sftkit-test.json", "--json /proc/sftkit-test.json: cannot write in /proc"),
    ("--report-dir", "/proc/sftkit-reports", "--report-dir /proc/sftkit-reports: cannot create the folder"),
    ("--report-dir", "/sys/sftkit/reports", "--report-dir /sys/sftkit/reports: cannot create the folder: Operation not "
                                            "permitted (EPERM)"),
])
def test_validate_to_an_unwritable_place_exits_2(run_cli, tmp_path, flag, target, fragment):
    args = [flag, target] + (["--report-dir", tmp_path / "r"] if flag == "--json" else [])
    result = run_cli("validate", BAD / "bom.jsonl", "--no-tokenizer", "--only", "schema", *args)
    assert_one_clean_error(result, fragment)


def test_validate_never_replaces_a_fifo_or_device_given_as_json(run_cli, tmp_path):
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    result = run_cli("validate", BAD / "bom.jsonl", "--no-tokenizer", "--only", "schema", "--json", fifo,
                     "--report-dir", tmp_path / "r")
    assert_one_clean_error(result, f"--json {fifo} is a named pipe (FIFO), not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_an_oserror_of_the_machine_is_exit_2_and_any_other_still_a_bug(run_cli, monkeypatch):
    import sftkit.validation

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/cache/x.bin")

    monkeypatch.setattr(sftkit.validation, "run_validation", full)
    result = run_cli("validate", BAD / "bom.jsonl", "--no-tokenizer")
    assert_one_clean_error(result, "/data/cache/x.bin: No space left on device (ENOSPC)", "the disk is full")

    def bug(*args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/internal/cache")

    monkeypatch.setattr(sftkit.validation, "run_validation", bug)
    result = run_cli("validate", BAD / "bom.jsonl", "--no-tokenizer")
    assert result.exit_code == 3 and "internal error" in result.stderr


# -- the corpus ----------------------------------------------------------------------------------------
SPEC_OPTION_FILES = {"spec_csv_delimiter_empty.yaml", "spec_csv_delimiter_long.yaml", "spec_parquet_batch_zero.yaml",
                     "spec_parquet_batch_negative.yaml"}
# Used by tests/test_terminal_escapes.py.
TERMINAL_FILES = {"terminal_escapes.jsonl", "escape_keys.jsonl"}


def test_every_round2_corpus_file_has_a_case():
    covered = {c[0] for c in FILES} | {c[0] for c in SPECS} | SPEC_OPTION_FILES | TERMINAL_FILES
    covered |= {"spec_severity_off.yaml"}
    files = {p.name for p in ROUND2.iterdir() if p.is_file()}
    assert files == covered
    assert len(files) >= 35


def test_sftkit_error_classes_keep_their_exit_codes():
    assert WriteError("x").exit_code == SftkitError("x").exit_code == 2


def test_writing_turns_a_failed_library_write_into_one_message_and_removes_the_partial(tmp_path):
    from sftkit.io import writing

    partial = tmp_path / ".checkpoint-3.tmp"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    with pytest.raises(WriteError) as caught:
        with writing(tmp_path / "checkpoint-3", "checkpoint", partial=partial):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.message == (f"cannot write the checkpoint {tmp_path / 'checkpoint-3'}: No space left on device "
                                    f"(ENOSPC); the partial {partial} was removed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(WriteError, match="file write failed") as caught:
        with writing(tmp_path / "c.pt", "checkpoint", also=(RuntimeError,)):
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    assert "the disk is full" in caught.value.hint
    with pytest.raises(ValueError), writing(tmp_path / "x"):  # anything else is a bug, and stays one
        raise ValueError("a bug")


def test_read_yaml_text_is_bounded_and_names_bad_bytes(tmp_path):
    from sftkit.spec import read_yaml_text

    path = tmp_path / "r.yaml"
    path.write_bytes(b"a: 1\nb: \xff\n")
    with pytest.raises(DataError, match="line 2: invalid UTF-8"):
        read_yaml_text(path)
    with open(path, "wb") as handle:
        handle.truncate(20 * 2**20)
    with pytest.raises(DataError, match="more than the limit of 16 MiB"):
        read_yaml_text(path)
