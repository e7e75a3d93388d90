"""The conformance check of reporters."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from sftkit.testing.common import call, start_check
from sftkit.testing.samples import XSS, sample_results
from sftkit.types import Result

ESCAPED_SUFFIXES = (".html", ".htm", ".md", ".markdown", ".svg")


def check_reporter(
    reporter: Any,
    output_dir: str | Path,
    *,
    results: Sequence[Result] | None = None,
    options: dict | None = None,
) -> dict[str, Path | None]:
    """Check a reporter writes each result kind (or declines one it does not handle with None).

    Checked: the return value is None or an existing, non-empty file inside ``output_dir``;
    every file it writes is named after the result kind or the reporter (``eval.csv``,
    ``csv-eval.txt``: ``sftkit.reporting.named_for``); no temporary file is left behind;
    HTML and Markdown output escapes a ``<script>`` string that came from the data; the
    ``default`` attribute is a bool. The results are ``sample_results()`` unless given.
    Returns ``{result kind: path or None}``.
    """
    from sftkit.reporting import named_for

    component, problems, bound = start_check("reporters", reporter, options)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    default = getattr(component.func, "default", None)
    if default is not None and not isinstance(default, bool):
        problems.add(f"attribute default must be True or False, got {default!r}")
    written: dict[str, Path | None] = {}
    for result in results if results is not None else sample_results():
        before = set(output_dir.iterdir())
        ok, path = call(problems, f"reporting a {result.kind!r} result", bound, result, output_dir)
        returned = Path(path).resolve() if ok and isinstance(path, (str, Path)) else None
        for new in sorted(set(output_dir.iterdir()) - before):
            if new.resolve() == returned or new.name.endswith(".tmp"):
                continue  # the returned path is checked below; leftovers at the end
            if not named_for(new.name, result.kind, component.name):
                problems.add(f"{result.kind}: wrote {new.name}, which is named after neither the result kind nor the "
                             f"reporter (name it {result.kind}.<suffix> or {component.name}-...; two reporters must "
                             "never write the same file)")
        if not ok:
            continue
        if path is None:
            written[result.kind] = None
            continue
        if not isinstance(path, (str, Path)):
            problems.add(f"{result.kind}: returned {type(path).__name__}, expected the path written or None")
            continue
        path = Path(path)
        written[result.kind] = path
        if not path.is_file() or path.stat().st_size == 0:
            problems.add(f"{result.kind}: returned {path}, which is not a non-empty file")
            continue
        if output_dir.resolve() not in path.resolve().parents:
            problems.add(f"{result.kind}: wrote {path} outside the output folder {output_dir}")
        elif not named_for(path.resolve().relative_to(output_dir.resolve()).parts[0], result.kind, component.name):
            problems.add(f"{result.kind}: returned {path.name}, which is named after neither the result kind nor the "
                         f"reporter (name it {result.kind}.<suffix> or {component.name}-...)")
        if path.suffix.lower() in ESCAPED_SUFFIXES and XSS in path.read_text("utf-8", "replace"):
            problems.add(f"{result.kind}: {path.name} contains an unescaped <script> string from the data "
                         "(escape every string that came from data, e.g. with html.escape)")
    leftovers = [p.name for p in output_dir.rglob("*") if p.name.endswith(".tmp")]
    if leftovers:
        problems.add(f"temporary files left behind: {leftovers} (write with sftkit.io.atomic_write_text)")
    problems.check()
    return written
