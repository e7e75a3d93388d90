"""The conformance check of loaders."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from sftkit.errors import DataError
from sftkit.testing.common import Problems, call, start_check, unwrap


def check_loader(
    loader: Any,
    path: str | Path,
    *,
    records: list[dict] | None = None,
    malformed: str | Path | None = None,
    options: dict | None = None,
) -> list[dict]:
    """Check a loader reads ``path`` into dict records (equal to ``records`` when given).

    Also: reading twice gives the same records; ``malformed`` (a broken file, if given) raises
    ``sftkit.DataError`` that names the file, and a loader with a ``skip_invalid`` option
    yields that DataError instead when the option is true; ``suffixes`` start with a dot; ``matches`` is
    callable. Returns the records.
    """
    component, problems, bound = start_check("loaders", loader, options)
    path = Path(path)
    got: list = []
    ok, stream = call(problems, f"reading {path}", bound, path)
    if ok:
        if isinstance(stream, (str, bytes, dict)) or not isinstance(stream, Iterable):
            problems.add(f"returned {type(stream).__name__}, expected an iterable of dicts (a generator is best)")
        else:
            ok, got = call(problems, f"iterating the records of {path}", list, stream)
            got = got or []
    for index, record in enumerate(got):
        if isinstance(record, DataError) and (options or {}).get("skip_invalid"):
            continue
        if not isinstance(record, dict):
            problems.add(f"record {index} is a {type(record).__name__}, expected a dict")
            break
        if not all(isinstance(key, str) for key in record):
            problems.add(f"record {index} has a key that is not a string: {list(record)!r}")
            break
    if ok and records is not None and got != records:
        problems.add(f"read {len(got)} records that differ from the {len(records)} expected; first read: "
                     f"{got[:1]!r}, expected {records[:1]!r}")
    if ok:
        ok2, again = call(problems, f"reading {path} a second time", lambda p: list(bound(p)), path)
        if ok2 and again != got:
            problems.add("reading the same file twice gave different records")
    if malformed is not None:
        _check_malformed(bound, Path(malformed), problems)
        if "skip_invalid" in component.options() and "skip_invalid" not in (options or {}):
            skipping = component.bind({**(options or {}), "skip_invalid": True})
            _check_skip_invalid(skipping, Path(malformed), problems)
    suffixes = getattr(component.func, "suffixes", None)
    if suffixes is not None and (isinstance(suffixes, str)
                                 or not all(isinstance(s, str) and s.startswith(".") for s in suffixes)):
        problems.add(f"attribute suffixes must be a tuple like ('.jsonl',), got {suffixes!r}")
    matches = getattr(component.func, "matches", None)
    if matches is not None and not callable(matches):
        problems.add("attribute matches must be a function matches(path) -> bool")
    problems.check()
    return got


def _check_malformed(bound: Callable, path: Path, problems: Problems) -> None:
    try:
        list(bound(path))
    except DataError as exc:
        if path.name not in str(exc):
            problems.add(f"the DataError for the malformed {path.name} does not name the file: {exc}")
        return
    except Exception as exc:
        exc = unwrap(exc)
        problems.add(f"reading the malformed {path.name} raised {type(exc).__name__}: {exc} (raise sftkit.DataError "
                     "with path= and line= or row=)")
        return
    problems.add(f"reading the malformed {path.name} raised no DataError")


def _check_skip_invalid(bound: Callable, path: Path, problems: Problems) -> None:
    """With skip_invalid=True, a broken line is yielded as a DataError naming the file, not raised."""
    try:
        items = list(bound(path))
    except DataError as exc:
        if (exc.line or 0) > 1:  # a broken line after the first could have been skipped
            problems.add(f"with skip_invalid=True, reading the malformed {path.name} still raised for line "
                         f"{exc.line}: {exc.message} (yield the DataError instead of raising it)")
        return  # a whole-file problem (an unreadable header, an unparsable array) cannot be skipped
    except Exception as exc:
        exc = unwrap(exc)
        problems.add(f"reading the malformed {path.name} with skip_invalid=True raised {type(exc).__name__}: {exc}")
        return
    errors = [item for item in items if isinstance(item, DataError)]
    if not errors:
        problems.add(f"with skip_invalid=True, reading the malformed {path.name} yielded no DataError for the "
                     "broken part (yield the DataError instead of raising it)")
    elif any(path.name not in str(error) for error in errors):
        problems.add(f"with skip_invalid=True, a yielded DataError does not name {path.name}")
