"""Hand a result to every registered reporter (built-in json and html, and any plugin's)."""
from __future__ import annotations

from pathlib import Path

from sftkit.errors import WriteError
from sftkit.types import Result


def write_reports(result: Result, output_dir: str | Path, registry=None, *, flag: str = "--report-dir",
                  json_copy: str | Path | None = None) -> list[Path]:
    """Run each reporter on ``result``; a reporter that does not handle its kind returns None.
    ``json_copy`` (``--json PATH``) is one more copy of the result data, written in the same set.

    The folder is checked first (``check_writable_dir``). The reports are written as one set
    (``staged_writes``): each goes to a temporary file, and only when every reporter has
    succeeded are they renamed into place. A write that fails (a full disk) leaves every
    report of an earlier run as it was, so ``validate.json`` is never older than the
    ``validate.html`` beside it; the error names the report that could not be written and
    the files already there.
    """
    from sftkit.io import atomic_write_json, check_writable_dir, staged_writes
    from sftkit.registry import get_registry

    registry = registry or get_registry()
    output_dir = Path(output_dir)
    check_writable_dir(output_dir, flag)
    written = []
    try:
        with staged_writes():
            for _name, component in sorted(registry.components("reporters").items()):
                path = component.bind()(result, output_dir)
                if path is not None:
                    written.append(Path(path))
            if json_copy is not None:
                written.append(atomic_write_json(json_copy, result.data))
    except WriteError as exc:
        if exc.replaced:
            note = f"; the reports {', '.join(exc.replaced)} of this run were written"
        else:
            note = "; no report of this run was written"
        if exc.kept:
            note += f" ({', '.join(exc.kept)} {'is' if len(exc.kept) == 1 else 'are'} from an earlier run)"
        error = WriteError(exc.message + note, path=exc.path, hint=exc.hint)
        error.kept, error.replaced = exc.kept, exc.replaced
        raise error from None
    return written
