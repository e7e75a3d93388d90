"""Crash-safe checkpoints: written into a temp folder, then renamed to ``checkpoint-N``.

A checkpoint folder holds the trainable weights (``trainable.safetensors``), the optimizer and
scheduler state and the RNG states (``state.pt``, read back with ``weights_only=True``) and
``trainer_state.json`` (step, counters, early-stopping state), written last. Because the
rename is the final act, a ``checkpoint-N`` folder is complete by construction; a crash
leaves at most a ``.tmp-checkpoint-*`` folder, which resume ignores and removes.

``SFTKIT_TEST_CHECKPOINT_SLEEP=[STEP:]SECONDS`` pauses half-way through a write (tests kill
the process there).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from sftkit.errors import UsageError
from sftkit.io import atomic_write_json

PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``folder`` (``checkpoint-N`` with a trainer state), oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = PATTERN.match(child.name)
        if match and child.is_dir() and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(folder: str | Path, step: int, trainable: dict, optimizer: Any, scheduler: Any,
                    state: dict, keep: int) -> Path:
    """Write ``checkpoint-<step>`` atomically and keep only the newest ``keep`` checkpoints."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"checkpoint-{step}"
    tmp = folder / f".tmp-checkpoint-{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
    np_state = np.random.get_state()
    torch.save({
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_rng": [np_state[0], torch.from_numpy(np_state[1].astype("int64")), *np_state[2:]],
        "python_rng": list(random.getstate()[1]),
        "python_rng_extra": [random.getstate()[0], random.getstate()[2]],
    }, tmp / "state.pt")
    pause = _test_pause(step)
    if pause:
        print(f"sftkit-test: writing checkpoint-{step}", file=sys.stderr, flush=True)
        time.sleep(pause)
    atomic_write_json(tmp / STATE_FILE, {**state, "step": step})
    for child in tmp.iterdir():
        with open(child, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():  # a re-run of the same step after a resume
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(folder)
    for _, old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _test_pause(step: int) -> float:
    """Seconds to pause inside the write of ``step`` (``SFTKIT_TEST_CHECKPOINT_SLEEP=[STEP:]SECONDS``)."""
    value = os.environ.get("SFTKIT_TEST_CHECKPOINT_SLEEP", "")
    if not value:
        return 0.0
    at, _, seconds = value.rpartition(":")
    return float(seconds) if not at or int(at) == step else 0.0


def clean_partial(folder: str | Path) -> list[Path]:
    """Remove temp folders a crash left behind; returns what was removed."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for child in folder.iterdir():
            if child.name.startswith(".tmp-checkpoint-") and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


def load_checkpoint(path: str | Path) -> tuple[dict, dict, dict]:
    """``(trainable weights, optimizer/scheduler/RNG state, trainer state)`` of a checkpoint."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / STATE_FILE).is_file() or not (path / "trainable.safetensors").is_file():
        raise UsageError(f"{path} is not a complete sftkit checkpoint",
                         hint="pass a checkpoints/checkpoint-N folder, or --resume alone for the latest")
    weights = load_file(str(path / "trainable.safetensors"))
    state = torch.load(path / "state.pt", weights_only=True)
    trainer_state = json.loads((path / STATE_FILE).read_text("utf-8"))
    return weights, state, trainer_state


def restore_rng(state: dict) -> None:
    """Put back the RNG states saved in a checkpoint."""
    import numpy as np
    import torch

    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    kind, keys, *rest = state["numpy_rng"]
    np.random.set_state((kind, keys.numpy().astype("uint32"), *rest))
    version, gauss = state["python_rng_extra"]
    random.setstate((version, tuple(state["python_rng"]), gauss))
