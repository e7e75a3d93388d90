"""Built-in reporters: ``json`` (machine-readable) and ``html`` (one self-contained page).

The HTML reporter renders each result kind with the module ``html_<kind>`` beside this file
(``html_validate``, ``html_train``, ``html_eval``), all built on ``html_base``.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from sftkit import Result, hookimpl
from sftkit.io import atomic_write_json, atomic_write_text

KINDS = ("validate", "train", "eval")


def json_report(result: Result, output_dir: Path, filename: str = "") -> Path:
    """Write the result as JSON (``<kind>.json`` unless a filename is given)."""
    return atomic_write_json(Path(output_dir) / (filename or f"{result.kind}.json"), result.data)


def html(result: Result, output_dir: Path, filename: str = "") -> Path | None:
    """Write the result as one self-contained HTML page that opens offline."""
    if result.kind not in KINDS:
        return None
    module = importlib.import_module(f"{__name__}.html_{result.kind}")
    page = module.render(result)
    return atomic_write_text(Path(output_dir) / (filename or f"{result.kind}.html"), page)


json_report.default = True  # both run unless --reporter names others (or --no-reporter leaves them out)
html.default = True


@hookimpl
def register_reporters(register):
    """The built-in reporters."""
    register(json_report, name="json")
    register(html)
