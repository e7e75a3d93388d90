"""Hand a result to every registered reporter (built-in json and html, and any plugin's)."""
from __future__ import annotations

from pathlib import Path

from sftkit.types import Result


def write_reports(result: Result, output_dir: str | Path, registry=None) -> list[Path]:
    """Run each reporter on ``result``; a reporter that does not handle its kind returns None."""
    from sftkit.registry import get_registry

    registry = registry or get_registry()
    written = []
    for _name, component in sorted(registry.components("reporters").items()):
        path = component.bind()(result, Path(output_dir))
        if path is not None:
            written.append(Path(path))
    return written
