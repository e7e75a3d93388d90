"""Experiment trackers of a run (the recipe's ``report_to``): TensorBoard, Weights & Biases, MLflow, ...

sftkit logs through accelerate's tracker classes (``accelerate.tracking``, the same ones
``Accelerator(log_with=...)`` uses), which wrap each library's own API; sftkit adds only the
choice of names, the check that the library is installed (before any data or model loads),
and the run's values: ``train/loss``, ``train/learning_rate``, ``train/grad_norm``,
``train/tokens_per_second``, ``train/trained_tokens_per_second``, ``train/epoch`` for every
metrics line, ``eval/loss`` for every evaluation, and the resolved recipe as the run's
configuration. Only the main process logs (accelerate's trackers check this themselves).

Where the logs go: TensorBoard event files into ``<run folder>/tensorboard/`` (a resumed run
purges the steps after its checkpoint), Aim into the run folder; the others wherever the
library is configured to log (``WANDB_*``, ``MLFLOW_TRACKING_URI``, ...), in the project
``sftkit`` (``WANDB_PROJECT`` / ``MLFLOW_EXPERIMENT_NAME`` change it) under the run folder's name.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Iterable

from sftkit.errors import UsageError

# tracker name -> (modules any one of which it needs, what to pip install)
TRACKERS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
    "comet_ml": (("comet_ml",), "comet-ml"),
    "aim": (("aim",), "aim"),
    "clearml": (("clearml",), "clearml"),
    "dvclive": (("dvclive",), "dvclive"),
    "swanlab": (("swanlab",), "swanlab"),
    "trackio": (("trackio",), "trackio"),
}
PROJECT = "sftkit"
# metrics.jsonl key -> the name trackers get (the names transformers' Trainer uses)
LOGGED = {"loss": "train/loss", "lr": "train/learning_rate", "grad_norm": "train/grad_norm",
          "tokens_per_s": "train/tokens_per_second", "trained_tokens_per_s": "train/trained_tokens_per_second",
          "epoch": "train/epoch", "eval_loss": "eval/loss"}


def check_trackers(names: Iterable[str]) -> list[str]:
    """The trackers of ``report_to``, each known and installed (``none`` means none); one
    UsageError otherwise, raised before any data or model loads."""
    chosen: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if name in ("", "none"):
            continue
        if name not in TRACKERS:
            raise UsageError(f"report_to: unknown tracker {raw!r}", hint="trackers: " + ", ".join(TRACKERS))
        modules, package = TRACKERS[name]
        if not any(importlib.util.find_spec(module) is not None for module in modules):
            raise UsageError(f"report_to: the {name} tracker needs the {package!r} package, which is not installed",
                             hint=f"pip install {package}, or leave {name} out of --report-to / report_to")
        if name not in chosen:
            chosen.append(name)
    return chosen


class Trackers:
    """The started trackers of one run (none: every call does nothing)."""

    def __init__(self, trackers: list | None = None) -> None:
        self.trackers = list(trackers or [])

    def log(self, record: dict, step: int | None = None) -> None:
        """Log a metrics.jsonl record (its numeric values among ``LOGGED``) at its step."""
        if not self.trackers:
            return
        values = {LOGGED[key]: float(value) for key, value in record.items()
                  if key in LOGGED and isinstance(value, (int, float)) and not isinstance(value, bool)}
        for tracker in self.trackers:
            tracker.log(values, step=record.get("step", step))

    def close(self) -> None:
        """Flush and close every tracker (once)."""
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.finish()


def start_trackers(recipe: Any, out: Path, *, main: bool, start_step: int = 0) -> Trackers:
    """Start the recipe's trackers on the main process and store the recipe as the run's
    configuration; ``start_step`` (a resumed run) makes TensorBoard drop later steps."""
    names = check_trackers(recipe.report_to)
    if not names or not main:
        return Trackers()
    config = run_config(recipe)
    started = []
    try:
        for name in names:
            tracker = _tracker(name, Path(out), start_step)
            tracker.start()
            tracker.store_init_configuration(config)
            started.append(tracker)
    except BaseException:
        Trackers(started).close()
        raise
    return Trackers(started)


def _tracker(name: str, out: Path, start_step: int) -> Any:
    """accelerate's tracker of that name, set up for the run folder ``out``."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    cls = LOGGER_TYPE_TO_CLASS[name]
    if name == "tensorboard":  # events in <run>/tensorboard/; a resumed run purges the steps it redoes
        return cls("tensorboard", str(out), **({"purge_step": start_step + 1} if start_step else {}))
    if name == "aim":
        return cls(out.name, str(out))
    if name == "wandb":
        return cls(os.environ.get("WANDB_PROJECT", PROJECT), name=out.name)
    if name == "mlflow":
        return cls(experiment_name=PROJECT, run_name=out.name)
    return cls(PROJECT)


def run_config(recipe: Any) -> dict[str, Any]:
    """The resolved recipe as flat scalars (what every tracker accepts): lists and mappings as JSON."""
    out: dict[str, Any] = {}
    for key, value in recipe.to_dict().items():
        if value is None or isinstance(value, (bool, int, float, str)):
            out[key] = "none" if value is None else value
        else:
            out[key] = json.dumps(value, sort_keys=True, default=str)
    return out
