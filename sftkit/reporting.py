"""Hand a result to the chosen reporters (``--reporter`` / ``--no-reporter``; by default every
reporter that declares ``default = True``: the built-in json and html, and any plugin's that opts in)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sftkit.errors import PluginError, WriteError
from sftkit.types import Result


def named_for(name: str, kind: str, reporter: str) -> bool:
    """True when a report's file (or folder) name is named after the result kind or the reporter:
    ``eval.csv``, ``eval-examples.csv``, ``csv.txt``, ``csv_eval.txt`` (the name, then the end or
    one of ``. - _``). Reporters keep to this so two of them never write the same file."""
    return any(name == stem or (name.startswith(stem) and name[len(stem)] in ".-_") for stem in (kind, reporter))


def choose_reporters(registry=None, only: Sequence[str] = (), leave_out: Sequence[str] = ()) -> list[str]:
    """The names of the reporters a command runs.

    ``only`` (``--reporter``, the recipe's ``reporters``) when given, in its order; else every
    reporter that declares ``default = True``, by name. ``leave_out`` (``--no-reporter``,
    ``no_reporters``) is removed from either. An unknown name raises UsageError (exit 2)
    listing the reporters, so commands call this before any work starts.
    """
    from sftkit.registry import get_registry

    registry = registry or get_registry()
    for name in [*only, *leave_out]:
        registry.get("reporters", name)  # an unknown (or clashing) name: one message naming what exists
    if only:
        names = list(dict.fromkeys(only))
    else:
        names = sorted(name for name, component in registry.components("reporters").items()
                       if component.attribute("default", False) is True)
    return [name for name in names if name not in set(leave_out)]


def write_reports(result: Result, output_dir: str | Path, registry=None, *, flag: str = "--report-dir",
                  json_copy: str | Path | None = None, reporters: Sequence[str] | None = None,
                  min_free: int | None = None) -> list[Path]:
    """Run the chosen reporters on ``result``; a reporter that does not handle its kind returns None.

    ``reporters`` are names from ``choose_reporters`` (None: the default-on reporters).
    ``json_copy`` (``--json PATH``) is one more copy of the result data, written in the same
    set. Every reporter and the copy see the data with its ``schema_version``
    (``sftkit.schemas``). Two reporters that write the same file are a PluginError naming both.

    The folder is checked first (``check_writable_dir``, with ``min_free`` bytes free: by default
    ``sftkit.io.MIN_FREE_BYTES``; 0 where it was checked before a long job). The reports are written as one set
    (``staged_writes``): each goes to a temporary file, and only when every reporter has
    succeeded are they renamed into place. A write that fails (a full disk) leaves every
    report of an earlier run as it was, so ``validate.json`` is never older than the
    ``validate.html`` beside it; the error names the report that could not be written and
    the files already there.
    """
    from sftkit.io import atomic_write_json, check_writable_dir, staged_writes
    from sftkit.registry import get_registry
    from sftkit.schemas import versioned

    registry = registry or get_registry()
    names = choose_reporters(registry) if reporters is None else list(reporters)
    output_dir = Path(output_dir)
    check_writable_dir(output_dir, flag, **({} if min_free is None else {"min_free": min_free}))
    result = Result(result.kind, result.title, versioned(result.kind, result.data))
    written: dict[Path, str] = {}
    try:
        with staged_writes():
            for name in names:
                path = registry.get("reporters", name).bind()(result, output_dir)
                if path is None:
                    continue
                path = Path(path)
                if path.resolve() in {p.resolve() for p in written}:
                    other = next(n for p, n in written.items() if p.resolve() == path.resolve())
                    raise PluginError(f"reporters {other!r} and {name!r} both write {path}",
                                      hint="a reporter names its files after the result kind or itself; leave one "
                                           "out with --no-reporter NAME")
                written[path] = name
            paths = list(written)
            if json_copy is not None:
                paths.append(atomic_write_json(json_copy, result.data))
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
    return paths
