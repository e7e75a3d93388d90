"""Atomic file writes: a temp file in the same folder, fsync, then rename.

A crash leaves either the old file or the new one, never a half-written file that looks whole.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from sftkit.errors import UsageError

# Input files of the running command: no write may replace one (``protect_inputs``).
_PROTECTED: set[Path] = set()


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def protect_inputs(paths: Iterable[str | Path | None]) -> None:
    """Mark the command's input files: an atomic write to one of them is refused.

    Every report and run file goes through ``atomic_write_bytes``, so a ``--json`` or report
    path that names the dataset (or a spec, or a recipe) can never replace it.
    """
    for path in paths:
        if path and Path(path).is_file():
            _PROTECTED.add(_resolved(path))


def clear_protected() -> None:
    """Forget the protected inputs (the CLI calls this around each command)."""
    _PROTECTED.clear()


def check_not_input(path: str | Path, flag: str, *, folder: bool = False) -> None:
    """Refuse an output path that is an input file, or (``folder``) a folder holding one."""
    target = _resolved(path)
    for protected in _PROTECTED:
        if protected == target or (folder and protected.is_relative_to(target)):
            what = "holds the input file" if protected != target else "is the input file"
            raise UsageError(f"{flag} {path} {what} {protected}; writing there would replace your data",
                             hint=f"choose another {flag}")


def _default_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask), not mkstemp's 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    if _PROTECTED and _resolved(path) in _PROTECTED:
        raise UsageError(f"refusing to write {path}: it is an input file of this command",
                         hint="choose another output path (--json, --report-dir or --output-dir)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _default_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write JSON (UTF-8, indented, NaN refused) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n")
