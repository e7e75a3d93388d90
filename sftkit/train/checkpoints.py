"""Crash-safe checkpoints through accelerate's own state handling, on every process.

Layout of ``<run>/checkpoints/checkpoint-N/`` (N = optimizer steps done):

- ``trainer_state.json``: sftkit's part, written last by the main process:
  ``{"format": 2, "step": N, "total_steps", "run_state": {tokens, trained_tokens,
  train_seconds, best_eval, bad_evals, stopped_early}, "scheduler": <LambdaLR state_dict>,
  "processes": world size, "engine": accelerate's distributed type, "sha256": {relative path:
  hex digest of every other file in the folder}}`` (JSON, no pickle; resume checks the digests);
- what ``accelerator.save_state`` writes for the engine in use:
  - single process and DDP: ``model.safetensors`` (the *trainable* weights only, named as in
    the loss module, without DDP's wrapper: ``inner.base_model.model...lora_A.default.weight``),
    ``optimizer.bin`` (written by the main process; the optimizer is replicated);
  - FSDP: ``pytorch_model_fsdp_0/`` and ``optimizer_0/`` (torch.distributed.checkpoint
    folders, one shard file per process, the whole model state; sharded state dicts);
  - DeepSpeed: ``pytorch_model/`` (DeepSpeed's ZeRO checkpoint: model and optimizer shards of
    every process; LoRA runs leave the frozen parameters out);
  - every engine: ``random_states_<rank>.pkl``, one per process (python, numpy, torch and CUDA
    RNG of that process).

The tensors files are read with safetensors or ``torch.load(weights_only=True)`` (accelerate's
default); nothing is unpickled with ``weights_only=False``. The scheduler is in
``trainer_state.json`` rather than a pickle.

Atomicity: every process writes into ``checkpoints/.tmp-checkpoint-N/``; once all are done
the main process writes ``trainer_state.json``, fsyncs the folder's files and renames it to
``checkpoint-N``. A ``checkpoint-N`` folder is therefore complete by construction, and a crash
leaves at most a ``.tmp-checkpoint-*`` folder, which resume ignores and removes. Older
checkpoints beyond ``save_total_limit`` are removed after the rename.

``SFTKIT_TEST_CHECKPOINT_SLEEP=[STEP:]SECONDS`` pauses the main process after the state is
written and before ``trainer_state.json`` (tests kill the process there).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from sftkit.errors import UsageError
from sftkit.integrity import digest_problem, digests, json_problem, safetensors_problem
from sftkit.io import atomic_write_json, writing

FORMAT = 2
PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.safetensors"  # accelerate's SAFE_WEIGHTS_NAME (single process and DDP)


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


def _fsync(path: Path) -> None:
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


def only_trainable_hook(models: list, weights: list, _output_dir: str) -> None:
    """accelerate save-state pre-hook: keep only the trainable weights in ``model.safetensors``
    (a LoRA checkpoint holds the adapter, not another copy of the frozen base)."""
    for index, model in enumerate(models[:len(weights)]):
        trainable = {name for name, param in model.named_parameters() if param.requires_grad}
        weights[index] = {k: v for k, v in weights[index].items() if k in trainable}


def save_checkpoint(accelerator: Any, folder: str | Path, step: int, state: dict, keep: int,
                    save_kwargs: dict | None = None) -> Path:
    """Write ``checkpoint-<step>`` atomically on every process (a collective: all must call it)
    and keep only the newest ``keep`` checkpoints; returns the folder."""
    folder = Path(folder)
    final = folder / f"checkpoint-{step}"
    tmp = folder / f".tmp-checkpoint-{step}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with writing(final, "checkpoint"):
            folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
    accelerator.wait_for_everyone()
    # A full disk (torch.save's RuntimeError, safetensors' error) is one WriteError naming the
    # checkpoint, and the temporary folder is removed: no checkpoint-N is half written.
    with writing(final, "checkpoint", also=(RuntimeError,), partial=tmp):
        accelerator.save_state(str(tmp), safe_serialization=True, **(save_kwargs or {}))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        pause = _test_pause(step)
        if pause:
            print(f"sftkit-test: writing checkpoint-{step}", file=sys.stderr, flush=True)
            time.sleep(pause)
        with writing(final, "checkpoint", partial=tmp):
            atomic_write_json(tmp / STATE_FILE, {"format": FORMAT, **state, "step": step, "sha256": _digests(tmp)})
        for path in sorted(tmp.rglob("*"), reverse=True):
            _fsync(path)
        _fsync(tmp)
        if final.exists():  # a re-run of the same step after a resume
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync(folder)
        for _, old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every file in the checkpoint folder but the trainer state, by relative path."""
    return digests(folder, [file for file in folder.rglob("*") if file.is_file() and file.name != STATE_FILE])


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


def read_trainer_state(path: str | Path) -> dict:
    """The trainer state of a complete checkpoint (a usage error for anything else)."""
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise UsageError(f"{path} is not a complete sftkit checkpoint",
                         hint="pass a checkpoints/checkpoint-N folder, or --resume alone for the latest")
    try:
        state = json.loads((path / STATE_FILE).read_text("utf-8"))
    except (ValueError, OSError) as exc:
        raise UsageError(f"{path / STATE_FILE} is damaged: {str(exc).splitlines()[0][:200]}",
                         hint="resume from another checkpoint, or --resume latest-valid") from None
    if not isinstance(state, dict):
        raise UsageError(f"{path / STATE_FILE} is damaged: not a JSON object",
                         hint="resume from another checkpoint, or --resume latest-valid")
    if state.get("format") != FORMAT:
        raise UsageError(f"{path} was written by an older sftkit (checkpoint format {state.get('format', 1)})",
                         hint="start the run again without --resume (or with --overwrite)")
    return state


def check_rng_state(path: Path, rank: int) -> None:
    """Read this process's RNG file the way accelerate does (``weights_only=True``) before
    ``load_state``, which would only log a failure; a missing or unsafe file is a usage error."""
    import pickle

    from accelerate.utils import load

    file = path / f"random_states_{rank}.pkl"
    if not file.is_file():
        raise UsageError(f"{path} has no RNG state for process {rank}",
                         hint="resume with the same number of processes as the interrupted run")
    try:
        load(file)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise UsageError(f"{file} could not be read safely: {str(exc).splitlines()[0][:200]}",
                         hint="the checkpoint is damaged or was not written by sftkit; resume from another") from None


def check_model_file(path: Path, module: Any) -> None:
    """The weights in ``model.safetensors`` must be exactly this run's trainable parameters
    (named as in the module accelerate saves: the loss module without its DDP wrapper)."""
    from safetensors import safe_open

    file = path / MODEL_FILE
    if not file.is_file():
        raise UsageError(f"{path} has no {MODEL_FILE}",
                         hint="resume with the same distributed setup as the interrupted run")
    with safe_open(str(file), "pt") as handle:
        saved = set(handle.keys())
    trainable = {name for name, param in module.named_parameters() if param.requires_grad}
    if saved != trainable:
        raise UsageError("the checkpoint does not fit this model (different method, LoRA settings or tokens)",
                         hint="resume with the same recipe as the interrupted run")


def load_checkpoint(accelerator: Any, module: Any, path: str | Path, load_kwargs: dict | None = None) -> dict:
    """Restore model, optimizer and per-process RNG state with ``accelerator.load_state`` on
    every process; returns the trainer state."""
    import pickle

    from sftkit.train.distributed import is_sharded

    path = Path(path)
    state = read_trainer_state(path)
    if state.get("processes", 1) != accelerator.num_processes:
        raise UsageError(f"{path} was written by {state.get('processes')} process(es), this run has "
                         f"{accelerator.num_processes}", hint="resume with the same number of processes")
    check_rng_state(path, accelerator.process_index)
    if not is_sharded(accelerator):
        check_model_file(path, accelerator.unwrap_model(module))
    try:
        accelerator.load_state(str(path), **(load_kwargs or {}))
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise UsageError(f"{path} could not be read safely: {str(exc).splitlines()[0][:200]}",
                         hint="the checkpoint is damaged or was not written by sftkit; resume from another") from None
    return state


LATEST, LATEST_VALID = "latest", "latest-valid"
SHARDED_PARTS = ("pytorch_model_fsdp_0", "pytorch_model")  # FSDP and DeepSpeed model folders


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be resumed (a short reason naming the file), or None:
    the files it needs are present, the trainer state parses with a sane integer step, the
    safetensors files open and ``optimizer.bin`` is a whole zip archive (nothing is unpickled)."""
    import zipfile

    path = Path(path)
    state_file = path / STATE_FILE
    state, problem = json_problem(state_file)
    if problem:
        return problem
    step, total = state.get("step"), state.get("total_steps")
    if type(step) is not int or step < 1:
        return f"{state_file} has an impossible step {step!r}"
    if type(total) is int and step > total:
        return f"{state_file} has an impossible step {step} of {total}"
    match = PATTERN.match(path.name)
    if match and int(match.group(1)) != step:
        return f"{state_file} says step {step} in {path.name}"
    if not (path / "random_states_0.pkl").is_file():
        return f"{path / 'random_states_0.pkl'} is missing"
    if not any((path / part).is_dir() for part in SHARDED_PARTS):
        for name in (MODEL_FILE, "optimizer.bin"):
            if not (path / name).is_file():
                return f"{path / name} is missing"
    for file in sorted(path.rglob("*.safetensors")):
        problem = safetensors_problem(file)
        if problem:
            return problem
    for file in sorted(path.rglob("*.bin")):
        try:
            with zipfile.ZipFile(file) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"{file} is damaged (bad member {bad})"
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            return f"{file} is damaged ({str(exc)[:120]})"
    return digest_problem(path, state.get("sha256"))  # written at save time (older checkpoints have none)


def resolve_resume(folder: str | Path, resume: str, say: Any = print) -> Path:
    """The checkpoint ``--resume`` means: the newest (``latest``), the newest that passes
    :func:`checkpoint_problem` (``latest-valid``, saying which it skipped and why) or the one named;
    a missing or damaged one is a usage error."""
    folder = Path(folder)
    found = list_checkpoints(folder)
    if resume == LATEST_VALID:
        for _, path in reversed(found):
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            say(f"--resume latest-valid: skipped {path.name}: {problem}")
        raise UsageError(f"--resume latest-valid: no valid checkpoint in {folder}",
                         hint="start without --resume")
    if resume == LATEST:
        if not found:
            raise UsageError(f"--resume: no complete checkpoint in {folder}",
                             hint="start without --resume, or pass a checkpoint folder")
        path = found[-1][1]
    else:
        path = Path(resume)
        if not path.is_dir():
            raise missing_checkpoint(path)
    problem = checkpoint_problem(path)
    if problem is not None:
        raise UsageError(f"--resume: checkpoint {path.name} is damaged: {problem}",
                         hint="pass --resume latest-valid to use the newest undamaged checkpoint")
    return path


def missing_checkpoint(path: str | Path) -> UsageError:
    """The message for ``--resume PATH`` where PATH is not a folder, listing the checkpoints beside it."""
    path = Path(path)
    names = [p.name for _, p in list_checkpoints(path.parent)]
    listed = ", ".join(names) if names else "none"
    return UsageError(f"--resume: checkpoint {path} does not exist (checkpoints in {path.parent}: {listed})",
                      hint="pass one of those, --resume alone for the latest, or --resume latest-valid")
