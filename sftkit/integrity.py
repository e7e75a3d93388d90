"""Checks of saved files before they load: safetensors files, JSON files, sha256 digests.

Shared by the checkpoint checks of ``--resume`` (``sftkit.train.checkpoints.checkpoint_problem``)
and the run-folder checks of ``eval``, ``chat`` and ``export`` (``sftkit.runs.run_folder_problem``).
Each ``*_problem`` function returns a short reason naming the file ("PATH is truncated (...)"),
or None when the file is sound. Nothing is unpickled; a safetensors file is read by its header
and opened with ``safetensors.safe_open`` (which reads no tensor data).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# safetensors refuses headers over 100 MB; a length beyond that is garbage, not a header
MAX_SAFETENSORS_HEADER = 100_000_000


def sha256_file(file: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digests(folder: str | Path, files: Iterable[Path]) -> dict[str, str]:
    """``{path relative to folder (posix): sha256}`` of ``files``, sorted by path."""
    folder = Path(folder)
    return {file.relative_to(folder).as_posix(): sha256_file(file) for file in sorted(files)}


def digest_problem(folder: str | Path, recorded: Any) -> str | None:
    """The first file of ``recorded`` (``{relative path: sha256}``, written at save time) that is
    missing or no longer matches its digest; None when all match (or nothing was recorded)."""
    if not isinstance(recorded, dict):
        return None
    folder = Path(folder)
    for name, want in sorted(recorded.items()):
        file = folder / str(name)
        if not file.is_file():
            return f"{file} is missing"
        if sha256_file(file) != want:
            return f"{file} does not match its sha256 recorded at save time (the file changed after it was saved)"
    return None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def safetensors_problem(file: str | Path) -> str | None:
    """Why ``file`` is not a whole safetensors file (missing, empty, truncated, a garbled header),
    or None: the 8-byte header length, the JSON header, the byte length its tensors need, and
    ``safe_open`` listing the tensors."""
    file = Path(file)
    if not file.is_file():
        return f"{file} is missing"
    try:
        size = file.stat().st_size
        with open(file, "rb") as handle:
            head = handle.read(8)
            if size == 0:
                return f"{file} is empty (0 bytes)"
            if len(head) < 8:
                return f"{file} is truncated ({size} bytes, too short for a safetensors header)"
            length = int.from_bytes(head, "little")
            if head.startswith(b"PK\x03\x04"):
                return f"{file} is not a safetensors file (it is a ZIP archive, as torch.save writes)"
            if length > MAX_SAFETENSORS_HEADER or handle.read(1) not in (b"{", b""):
                return f"{file} is not a safetensors file (it does not start with a header length and JSON)"
            handle.seek(8)
            if 8 + length > size:
                return f"{file} is truncated ({size:,} bytes, its header alone needs {8 + length:,})"
            header = json.loads(handle.read(length))
    except OSError as exc:
        return f"{file} cannot be read ({_reason(exc)})"
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, deep nesting
        return f"{file} has a garbled safetensors header ({_reason(exc)})"
    if not isinstance(header, dict):
        return f"{file} has a garbled safetensors header (not a JSON object)"
    try:
        ends = [int(info["data_offsets"][1]) for key, info in header.items() if key != "__metadata__"]
    except (TypeError, KeyError, IndexError, ValueError):
        return f"{file} has a garbled safetensors header (a tensor without data offsets)"
    needed = 8 + length + max(ends, default=0)
    if size < needed:
        return f"{file} is truncated ({size:,} of {needed:,} bytes)"
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), "pt") as handle:
            list(handle.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        return f"{file} is damaged ({_reason(exc)})"
    return None


def json_problem(file: str | Path) -> tuple[dict | None, str | None]:
    """``(object, None)`` for a file holding one JSON object, else ``(None, reason)``."""
    file = Path(file)
    if not file.is_file():
        return None, f"{file} is missing"
    try:
        data = json.loads(file.read_text("utf-8"))
    except OSError as exc:
        return None, f"{file} cannot be read ({_reason(exc)})"
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, deep nesting
        return None, f"{file} is damaged (not valid JSON: {_reason(exc)})"
    if not isinstance(data, dict):
        return None, f"{file} is damaged (not a JSON object)"
    return data, None
