"""Atomic file writes, up-front write checks, and guarded reads.

Writes go to a temp file in the same folder, are fsync'ed, then renamed: a crash or a full
disk leaves either the old file or the new one, never a half-written file that looks whole,
and a failed write is one ``WriteError`` ("cannot write PATH: reason", exit 2).
``check_writable_dir`` / ``check_writable_file`` test an output path before long work starts.
``check_readable`` refuses FIFOs, devices and folders before a reader opens them;
``read_bounded`` and ``bounded_lines`` bound what is read from a file that never ends;
``reading`` turns a library's "broken file" error into one DataError naming the file, and
``writing`` a library's failed write (torch.save, safetensors) into one WriteError.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from sftkit.errors import OS_ERROR_HINTS, DataError, SftkitError, UsageError, WriteError, os_hint, os_reason

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


def default_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask), not mkstemp's 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# Writes staged by ``staged_writes``: (temp file, target) pairs renamed when the block succeeds.
_STAGES: list[dict[Path, str]] = []


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _write_hint(exc: OSError, folder: Path) -> str | None:
    if exc.errno == errno.ENOENT and folder.is_dir():
        return (f"the folder {folder} does not take new files (it may be a virtual file system like /proc or /sys): "
                f"choose another path")
    return os_hint(exc, "check the path and its file system, or choose another one")


def _cannot_write(path: Path, exc: OSError, note: str = "nothing was written there") -> WriteError:
    return WriteError(f"cannot write {path}: {os_reason(exc)}; {note}", path=str(path),
                      hint=_write_hint(exc, path.parent))


def _check_target(path: Path) -> None:
    """Refuse a target that is a folder or not a regular file (a FIFO, a device: a rename
    would replace the node itself, e.g. ``/dev/null``)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    if stat.S_ISDIR(mode):
        raise WriteError(f"cannot write {path}: it is a folder", path=str(path), hint="give a file name")
    if not stat.S_ISREG(mode):
        raise WriteError(f"cannot write {path}: it is {_kind(mode)}, not a regular file; reports are written to a "
                         f"temporary file and renamed, which would replace it", path=str(path),
                         hint="give the path of a regular file")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    A write that fails (a full disk, a read-only or forbidden folder) raises ``WriteError``
    ("cannot write PATH: reason", exit 2) and leaves no temporary or partial file; a file that
    was already at ``path`` is kept unchanged. Inside ``staged_writes`` the rename waits until
    the whole block has succeeded.
    """
    path = Path(path)
    if _PROTECTED and _resolved(path) in _PROTECTED:
        raise UsageError(f"refusing to write {path}: it is an input file of this command",
                         hint="choose another output path (--json, --report-dir or --output-dir)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WriteError(f"cannot write {path}: {_first_file(path.parent)} is a file, not a folder",
                         path=str(path), hint="choose another folder") from None
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    _check_target(path)
    tmp = None
    try:
        # The temp file's name stays short: a long target name must not make it too long.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:80]}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, default_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if _STAGES:
            stage = _STAGES[-1]
            if path in stage:  # written twice in one stage: the later one wins
                _unlink_quietly(stage.pop(path))
            stage[path] = tmp
            return path
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            _unlink_quietly(tmp)
        raise _cannot_write(path, exc, "nothing was written there (no partial file is left"
                            + (", the file already there is unchanged)" if path.exists() else ")")) from None
    except BaseException:
        if tmp is not None:
            _unlink_quietly(tmp)
        raise
    return path


def _nearest_folder(path: Path) -> Path:
    """The nearest folder of ``path`` (itself or a parent) that exists."""
    for part in [path, *path.parents]:
        if part.is_dir():
            return part
    return Path(".")


def _first_file(folder: Path) -> Path:
    """The first part of ``folder`` that exists but is not a folder."""
    for part in reversed([folder, *folder.parents]):
        if part.exists() and not part.is_dir():
            return part
    return folder


@contextmanager
def staged_writes() -> Iterator[None]:
    """Make the atomic writes inside the block all-or-nothing.

    Each file is written in full (and fsync'ed) to a temporary file as the block runs; only
    when the block ends without an error are they all renamed over their targets. A write
    that fails (a full disk) or any other error removes every temporary file and leaves the
    files already there as they were, so a set of reports is never half old and half new. A
    nested block joins the outer one.
    """
    if _STAGES:
        yield
        return
    stage: dict[Path, str] = {}
    _STAGES.append(stage)
    try:
        yield
    except BaseException as exc:
        _STAGES.pop()
        for tmp in stage.values():
            _unlink_quietly(tmp)
        if isinstance(exc, WriteError):
            targets = [*stage, *([Path(exc.path)] if exc.path else [])]
            exc.kept = [str(p) for p in dict.fromkeys(targets) if p.exists()]
        raise
    _STAGES.pop()
    pending = list(stage.items())
    for index, (path, tmp) in enumerate(pending):
        try:
            os.replace(tmp, path)
        except OSError as exc:
            for _, left in pending[index:]:
                _unlink_quietly(left)
            done = [str(p) for p, _ in pending[:index]]
            error = _cannot_write(path, exc, "nothing was written there" + (
                f"; already replaced: {', '.join(done)}" if done else ""))
            error.replaced = done
            error.kept = [str(p) for p, _ in pending[index:] if p.exists()]
            raise error from None


@contextmanager
def writing(path: str | Path, what: str = "file", *, also: tuple[type[BaseException], ...] = (),
            partial: str | Path | None = None) -> Iterator[None]:
    """Turn a failed write inside the block (a full disk, a read-only folder) into one WriteError.

    For writes that do not go through ``atomic_write_bytes`` (``torch.save``, safetensors'
    ``save_file``, ``save_pretrained`` into a temporary folder): an OSError (or a Rust
    library's error carrying one, ``sftkit.errors.os_error_in``), or one of the classes in
    ``also`` (e.g. ``RuntimeError`` for ``torch.save``), becomes "cannot write PATH: reason"
    (exit 2), and ``partial`` (the temporary file or folder being written) is removed first,
    so nothing half-written is left.
    """
    try:
        yield
    except WriteError:  # an atomic write inside the block: its own message, the partial removed too
        _remove_partial(partial)
        raise
    except SftkitError:
        raise
    except Exception as exc:
        from sftkit.errors import os_error_in

        machine = os_error_in(exc)  # an OSError, or a Rust library's error that carries one
        if machine is not None:
            exc = machine
        elif not isinstance(exc, also):
            raise
        # torch.save says only "unexpected pos ..." on a full disk: the free space tells (before the partial goes)
        free = None if isinstance(exc, OSError) else _free_bytes(_nearest_folder(Path(path)))
        removed = f"; the partial {partial} was removed" if _remove_partial(partial) else ""
        if isinstance(exc, OSError):
            raise WriteError(f"cannot write the {what} {path}: {os_reason(exc)}{removed}", path=str(path),
                             hint=_write_hint(exc, Path(path).parent)) from None
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        full = any(word in str(exc) for word in ("No space left", "code: 28", "StorageFull", "file write failed"))
        if free is not None and free < MIN_FREE_BYTES:
            full = True
            detail += f" (the file system has {_size(free)} free: it is full)"
        raise WriteError(f"cannot write the {what} {path}: {detail}{removed}", path=str(path),
                         hint=OS_ERROR_HINTS[errno.ENOSPC] if full else "check the disk and the folder") from None


def _free_bytes(folder: Path) -> int | None:
    try:
        info = os.statvfs(folder)
    except OSError:
        return None
    return info.f_bavail * info.f_frsize


def _remove_partial(partial: str | Path | None) -> bool:
    """Remove the file or folder a failed write left (True when there was one)."""
    if partial is None or not Path(partial).exists():
        return False
    if Path(partial).is_dir() and not Path(partial).is_symlink():
        import shutil

        shutil.rmtree(partial, ignore_errors=True)
    else:
        _unlink_quietly(partial)
    return True


# -- up-front checks -----------------------------------------------------------------------------

MIN_FREE_BYTES = 1 << 20


def _probe_dir(folder: Path, flag: str, shown: Path, min_free: int, where: str = "") -> None:
    """Create and remove a temporary file in ``folder``: the one sure test that it is writable."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".sftkit-write-check.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
        free = os.statvfs(folder)
    except OSError as exc:
        place = f"in{where}" if where else "there"
        raise WriteError(f"{flag} {shown}: cannot write {place}: {os_reason(exc)}", path=str(shown),
                         hint=_write_hint(exc, folder)) from None
    available = free.f_bavail * free.f_frsize
    if min_free and available < min_free:
        of = f" of{where}" if where else ""
        raise WriteError(f"{flag} {shown}: only {_size(available)} free on the file system{of}, "
                         f"{_size(min_free)} needed", path=str(shown),
                         hint=f"free some space, or choose another {flag}")


def check_writable_dir(path: str | Path, flag: str, *, min_free: int = MIN_FREE_BYTES) -> Path:
    """Check up front that ``path`` is, or can be created as, a folder sftkit can write in.

    Call it before any long work, so a report, output or run folder that cannot be written
    (read-only, inside /proc, permission denied, a full disk, a file in the way) is one
    message (``WriteError``, exit 2) at once rather than after the work. Nothing is left
    behind: folders created for the test are removed again. ``min_free`` bytes must be free.
    """
    return _check_dir(Path(path), flag, Path(path), min_free)


def _check_dir(path: Path, flag: str, shown: Path, min_free: int) -> Path:
    where = "" if shown == path else f" {path}"
    if path.exists():
        if not path.is_dir():
            raise WriteError(f"{flag} {shown}: {path} is {_kind(os.stat(path).st_mode)}, not a folder"
                             if shown != path else f"{flag} {path} is {_kind(os.stat(path).st_mode)}, not a folder",
                             path=str(shown), hint=f"choose another {flag}")
        _probe_dir(path, flag, shown, min_free, where)
        return path
    blocker = _first_file(path)
    if blocker != path:
        raise WriteError(f"{flag} {shown}: {blocker} is a file, not a folder", path=str(shown),
                         hint=f"choose another {flag}")
    created: list[Path] = []
    try:
        for part in reversed([path, *path.parents]):
            if not part.exists():
                part.mkdir()
                created.append(part)
        _probe_dir(path, flag, shown, min_free, where)
    except OSError as exc:
        raise WriteError(f"{flag} {shown}: cannot create the folder{where}: {os_reason(exc)}", path=str(shown),
                         hint=_write_hint(exc, _nearest_folder(path))) from None
    finally:
        for part in reversed(created):
            try:
                part.rmdir()
            except OSError:
                pass
    return path


def check_writable_file(path: str | Path, flag: str, *, min_free: int = MIN_FREE_BYTES) -> Path:
    """Check up front that the file ``path`` (``--json``, ...) can be written: not a folder,
    a FIFO or a device, not an input of the command, and in a folder that can be written."""
    path = Path(path)
    check_not_input(path, flag)
    if path.is_dir():
        raise WriteError(f"{flag} {path} is a folder", path=str(path), hint=f"give a file name to {flag}")
    if path.exists():
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise WriteError(f"{flag} {path} is {_kind(mode)}, not a regular file (reports are written to a "
                             f"temporary file and renamed, which would replace it)", path=str(path),
                             hint=f"give {flag} the path of a regular file")
    _check_dir(path.parent, flag, path, min_free)
    return path


# -- reading -------------------------------------------------------------------------------------

def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def describe_file(path: str | Path) -> str:
    """``a folder``, ``a named pipe (FIFO)``, ``a character device``, ...: what is at ``path``."""
    try:
        return _kind(os.stat(path).st_mode)
    except OSError as exc:
        return f"unreadable ({os_reason(exc)})"


def _size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n // size} {unit}" if n % size == 0 else f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _exact(n: int) -> str:
    """``10000 bytes (9.8 KiB)``, ``100 bytes``, ``2 GiB``: a limit as given and readable."""
    rounded = _size(n)
    if rounded.endswith(" bytes") or "." not in rounded:
        return rounded
    return f"{n} bytes ({rounded})"


def check_readable(path: str | Path, *, folder: bool = False, what: str = "") -> os.stat_result:
    """Check that ``path`` is a regular file (or, with ``folder``, a folder) before reading it.

    Named pipes, devices (``/dev/zero``), sockets and (for file readers) folders are refused
    with one ``DataError`` naming the path, before anything is opened: a FIFO without a writer
    would hang, ``/dev/zero`` never ends. Symbolic links are followed.
    """
    what = f" for the {what}" if what else ""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DataError("no such file or folder", path=str(path)) from None
    except OSError as exc:
        raise DataError(f"cannot read: {os_reason(exc)}", path=str(path), hint=os_hint(exc)) from None
    mode = info.st_mode
    if folder:
        if not stat.S_ISDIR(mode):
            raise DataError(f"is {_kind(mode)}, but a folder is needed{what}", path=str(path))
        return info
    if stat.S_ISDIR(mode):
        raise DataError(f"is a folder, not a file{what}", path=str(path),
                        hint="give the path of a data file (a datasets save_to_disk folder is read with --loader hf_disk)")
    if not stat.S_ISREG(mode):
        raise DataError(f"is {_kind(mode)}, not a regular file{what}: sftkit reads only regular files "
                        f"(a pipe or device may never end, or be read only once)", path=str(path),
                        hint="save the data to a file first and pass that file")
    return info


def open_for_reading(path: str | Path):
    """``open(path, "rb")`` after ``check_readable``; an OSError becomes "cannot read PATH: reason"."""
    check_readable(path)
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read: {os_reason(exc)}", path=str(path), hint=os_hint(exc)) from None


def read_bounded(path: str | Path, limit: int, *, hint: str | None = None) -> bytes:
    """The whole of the regular file ``path``, refused (``DataError``) when over ``limit`` bytes."""
    info = check_readable(path)
    too_big = f"the file is larger than the limit of {_exact(limit)} for reading a file whole"
    if info.st_size > limit:
        raise DataError(f"the file is {_size(info.st_size)}, more than the limit of {_exact(limit)} for reading a "
                        f"file whole", path=str(path), hint=hint)
    with open_for_reading(path) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise DataError(f"cannot read: {os_reason(exc)}", path=str(path), hint=os_hint(exc)) from None
    if len(data) > limit:
        raise DataError(too_big, path=str(path), hint=hint)
    return data


def bounded_lines(handle, path: str | Path, limit: int, *, hint: str | None = None) -> Iterator[bytes]:
    """The lines of a binary file (split on newlines), refusing a line over ``limit`` bytes
    (``DataError`` naming the line) instead of reading it whole into memory."""
    line_no = 0
    while True:
        try:
            raw = handle.readline(limit + 1)
        except OSError as exc:
            raise DataError(f"cannot read: {os_reason(exc)}", path=str(path), line=line_no + 1,
                            hint=os_hint(exc)) from None
        if not raw:
            return
        line_no += 1
        if len(raw) > limit and not (len(raw) == limit + 1 and raw.endswith(b"\n")):
            raise DataError(f"the line is longer than the limit of {_exact(limit)} for one line",
                            path=str(path), line=line_no,
                            hint=hint)
        yield raw


# Libraries' exceptions that mean "this file is broken" (looked up among the modules already
# imported: a library that is not loaded cannot have raised).
BROKEN_FILE_ERRORS = {
    "json": ("JSONDecodeError",),
    "yaml": ("YAMLError",),
    "pyarrow": ("ArrowException",),
    "pandas.errors": ("ParserError", "EmptyDataError"),
    "safetensors": ("SafetensorError",),
    "pickle": ("UnpicklingError",),
    "zipfile": ("BadZipFile",),
}


def broken_file_errors() -> tuple[type[BaseException], ...]:
    """The exception classes of ``BROKEN_FILE_ERRORS`` whose libraries are loaded, plus
    UnicodeDecodeError and EOFError."""
    found: list[type[BaseException]] = [UnicodeDecodeError, EOFError]
    for module_name, names in BROKEN_FILE_ERRORS.items():
        module = sys.modules.get(module_name)
        for name in names:
            cls = getattr(module, name, None) if module is not None else None
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found.append(cls)
    return tuple(found)


@contextmanager
def reading(path: str | Path, what: str = "file", *, also: tuple[type[BaseException], ...] = (), **where: Any):
    """Turn a library's "this file is broken" error inside the block into one DataError.

    ``with reading(path, "Parquet file", row=...): ...``: an OSError becomes "cannot read:
    reason", a json/yaml/pyarrow/pandas/safetensors/pickle error (and the classes in ``also``,
    e.g. torch's RuntimeError for ``torch.load``) "not a readable <what> (reason)", each
    naming ``path`` (and the line or row given in ``where``). SftkitErrors pass unchanged.
    """
    try:
        yield
    except SftkitError:
        raise
    except OSError as exc:
        raise DataError(f"cannot read: {os_reason(exc)}", path=str(path), hint=os_hint(exc), **where) from None
    except (MemoryError, RecursionError) as exc:
        raise DataError(f"not a readable {what}: {'too large' if isinstance(exc, MemoryError) else 'nested too deeply'} "
                        f"to read", path=str(path), **where) from None
    except Exception as exc:
        if isinstance(exc, broken_file_errors() + tuple(also)):
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"not a readable {what} ({detail})", path=str(path), **where) from None
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write JSON (UTF-8, indented, NaN refused) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n")
