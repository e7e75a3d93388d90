"""Errors a user can cause. The CLI prints them as one clear message and exits 2."""
from __future__ import annotations


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
