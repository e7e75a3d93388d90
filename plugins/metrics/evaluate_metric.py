"""``evaluate``: any module of the Hugging Face ``evaluate`` library, given as a local folder or
script, as a sftkit metric (``--metrics evaluate --metric-option evaluate.path=DIR``).

sftkit runs offline: a hub name (``rouge``, ``bleu``) is refused with one message (download the
module's folder where there is a network and pass its path). The module's ``compute`` output
becomes sub-metrics named ``<module>.<key>``: a list with one number per example is a per-example
score (its aggregate the mean); a single number is a corpus aggregate, recomputed on every
bootstrap resample, and its per-example score is the module on that example alone (as sentence
BLEU is to corpus BLEU). Other values (text, nested lists) are left out.
"""
from __future__ import annotations

import functools
import math
import numbers
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

PathOption = Annotated[str, Field(min_length=1, description="a local evaluate module: its folder or its .py script")]


@functools.lru_cache(maxsize=8)
def _load(path: str) -> Any:
    """The module at ``path`` (checked to be local), loaded once."""
    from sftkit.errors import UsageError

    where = Path(path).expanduser()
    try:
        exists = where.exists()
    except OSError:  # a name too long, or otherwise no path the system can look up
        exists = False
    if not exists:
        raise UsageError(f"metric evaluate: {path!r} is not a local folder or script, and sftkit loads no evaluate "
                         f"module from the hub (it runs offline)",
                         hint="download the module (its folder with the .py script) where there is a network, and "
                              "pass --metric-option evaluate.path=FOLDER")
    script = where if where.is_file() else where / f"{where.name}.py"
    if script.suffix != ".py" or not script.is_file():
        raise UsageError(f"metric evaluate: {path} holds no module script ({script.name})",
                         hint="an evaluate module is a folder NAME holding NAME.py, or the .py script itself")
    import evaluate

    try:
        return evaluate.load(str(where.resolve()))
    except Exception as exc:  # the module's own import or syntax error: the user's file, one message
        raise UsageError(f"metric evaluate: loading {path} failed: {type(exc).__name__}: {exc}",
                         hint="fix the module script (it must define an evaluate.Metric)") from None


def _compute(path: str, predictions: list[str], references: list[str]) -> dict[str, Any]:
    module = _load(path)
    return dict(module.compute(predictions=list(predictions), references=list(references)) or {})


def _name(path: str) -> str:
    where = Path(path)
    return where.stem if where.suffix == ".py" else where.name


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _split(path: str, result: dict[str, Any], n: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per-example lists and scalar aggregates of one ``compute`` output, keyed ``<module>.<key>``."""
    import numpy as np

    prefix = _name(path)
    lists, scalars = {}, {}
    for key, value in result.items():
        if _number(value) or (isinstance(value, np.ndarray) and value.ndim == 0):
            scalars[f"{prefix}.{key}"] = float(value)
        elif isinstance(value, (list, tuple, np.ndarray)) and len(value) == n and all(_number(v) for v in value):
            lists[f"{prefix}.{key}"] = [float(v) for v in value]
    return lists, scalars


def evaluate_module(predictions: list[str], references: list[str], path: PathOption) -> dict[str, list[float]]:
    """A local Hugging Face evaluate module (folder or script) as a metric: --metric-option evaluate.path=DIR."""
    _check_path(path)
    lists, scalars = _split(path, _compute(path, predictions, references), len(predictions))
    for sub in scalars:  # per example: the module on that example alone
        lists[sub] = []
    for prediction, reference in zip(predictions, references):
        _lists, alone = _split(path, _compute(path, [prediction], [reference]), 1)
        for sub in scalars:
            lists[sub].append(alone.get(sub, 0.0))
    return lists


def aggregate(predictions: list[str], references: list[str], path: str = "") -> dict[str, float]:
    """The module's single-number outputs: corpus aggregates, recomputed on each resample."""
    _check_path(path)
    return _split(path, _compute(path, predictions, references), len(predictions))[1]


def describe(path: str = "") -> dict[str, str]:
    """The module (loaded here, before any model: a hub name or a broken script exits 2 at once)."""
    _check_path(path)
    module = _load(path)
    return {"module": str(Path(path).expanduser().resolve()),
            "definition": f"evaluate module {module.name}: per-example lists are means, single numbers corpus "
                          f"aggregates"}


def _check_path(path: str) -> None:
    from sftkit.errors import UsageError

    if not path:
        raise UsageError("metric evaluate needs the module's path",
                         hint="pass --metric-option evaluate.path=FOLDER (a local evaluate module)")


evaluate_module.aggregate = aggregate
evaluate_module.describe = describe
