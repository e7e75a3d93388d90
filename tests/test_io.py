"""Atomic writes: whole files or nothing, with ordinary permissions."""
from __future__ import annotations

import os
import stat

import pytest

from sftkit.io import atomic_write_json, atomic_write_text


def test_atomic_write_replaces_whole_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "report.html"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]


def test_atomic_write_has_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"a": float("nan")})  # NaN is refused before anything is written
    assert path.read_text().strip() == '{\n  "a": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
