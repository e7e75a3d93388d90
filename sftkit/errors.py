"""Errors a user can cause. The CLI prints them as one clear message and exits 2."""
from __future__ import annotations

import errno


class SftkitError(Exception):
    """An error caused by input or usage; printed without a traceback, exit code 2."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(SftkitError):
    """A bad option, an unknown component, or a conflicting set of flags."""


class DataError(SftkitError):
    """A file that cannot be read or parsed; names the file, line or row, and field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        row: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ):
        self.path, self.line, self.row, self.field = path, line, row, field
        where = []
        if path:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if field:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message, hint=hint)


class PluginError(SftkitError):
    """A plugin failed to load, clashed with another, or a component misbehaved."""


class WriteError(SftkitError):
    """A report, JSON or run file that cannot be written (full disk, read-only or forbidden path).

    ``path`` is the file that could not be written; no partial file is left there.
    """

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None):
        self.path = path
        # Set by ``sftkit.io.staged_writes``: targets left as they were, and those already replaced.
        self.kept: list[str] = []
        self.replaced: list[str] = []
        super().__init__(message, hint=hint)


# OSErrors that describe the machine (disk, permissions, file system), not an sftkit bug.
OS_ERROR_HINTS = {
    errno.ENOSPC: "the disk is full: free some space, or write to another folder",
    errno.EDQUOT: "the disk quota is exhausted: free some space, or write to another folder",
    errno.EFBIG: "the file is too large for this file system: write to another one",
    errno.EROFS: "the file system is read-only: write to another folder",
    errno.EACCES: "permission denied: check the path's permissions, or choose another path",
    errno.EPERM: "operation not permitted: check the path's permissions, or choose another path",
    errno.EIO: "the device reported an input/output error: check the disk",
    errno.ENAMETOOLONG: "the path or a name in it is too long: choose a shorter one",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "the path is a folder, not a file",
    errno.ENOENT: "a folder on the path does not exist (or cannot be created)",
    errno.ELOOP: "the path has a symbolic link loop",
}


# OSErrors that describe the machine (disk, permissions, file system), not an sftkit bug: exit 2
# even where no read or write named its file first (errno.ENOENT and the like stay bugs).
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                                errno.EIO})


def os_error_in(exc: BaseException) -> OSError | None:
    """The OSError a library's own exception reports, or None.

    Libraries written in Rust (``tokenizers``, ``safetensors``) raise a plain ``Exception`` or
    their own class for a failed write, with the operating system's error in the text:
    ``No space left on device (os error 28)`` or ``IoError(Os { code: 28, kind: StorageFull, ...})``.
    Only the machine's errors (``ENVIRONMENT_ERRNOS``) are recognised, so a bug stays a bug.
    """
    import os
    import re

    if isinstance(exc, OSError):
        return exc
    match = re.search(r"\(os error (\d+)\)|\bOs \{ code: (\d+)", str(exc))
    if match is None:
        return None
    code = int(match.group(1) or match.group(2))
    return OSError(code, os.strerror(code)) if code in ENVIRONMENT_ERRNOS else None


def os_reason(exc: OSError) -> str:
    """``No space left on device (ENOSPC)``: an OSError's reason in words, with its errno name."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else text


def os_hint(exc: OSError, default: str | None = None) -> str | None:
    """What to do about an OSError, by its errno."""
    return OS_ERROR_HINTS.get(exc.errno or 0, default)
