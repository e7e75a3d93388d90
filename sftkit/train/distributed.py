"""What the processes of a data-parallel run agree on besides gradients.

- ``main_first``: the main process prepares the data first (validates, tokenizes, writes the
  Arrow cache) while the others wait on a gloo process group of their own with a long timeout
  (``SFTKIT_DATA_TIMEOUT`` seconds, default 6 hours) instead of an NCCL barrier with the
  10-minute default; the main process then tells them whether it succeeded, so every process
  stops with the same message when the data is bad.
- ``world_sum``: a number summed over the processes (the trained-token weights of a step, by
  which every process divides its loss).
- ``is_sharded`` / ``configure_deepspeed``: the engines that hold parameters in shards.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Iterator

from sftkit.errors import SftkitError

DEFAULT_DATA_TIMEOUT = 6 * 3600


class MainProcessFailed(SftkitError):
    """The main process stopped while preparing the data; this process stops with it."""


def data_timeout() -> float:
    """Seconds the other processes wait for the main one to prepare the data."""
    return float(os.environ.get("SFTKIT_DATA_TIMEOUT") or DEFAULT_DATA_TIMEOUT)


@contextmanager
def main_first(accelerator: Any) -> Iterator[bool]:
    """Run the body on the main process first, then on the others; yields ``is_main``.

    The others wait in a broadcast on a gloo group (timeout ``data_timeout()``); an error in
    the main process's body is re-raised there and reported to the others as
    ``MainProcessFailed`` (exit code of the original error).
    """
    if accelerator.num_processes == 1:
        yield True
        return
    import torch.distributed as dist

    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=data_timeout()))
    if accelerator.is_main_process:
        try:
            yield True
        except BaseException as exc:
            code = getattr(exc, "exit_code", 3)
            dist.broadcast_object_list([(code, str(getattr(exc, "message", exc)))], src=0, group=group)
            raise
        dist.broadcast_object_list([(0, "")], src=0, group=group)
        return
    status = [None]
    dist.broadcast_object_list(status, src=0, group=group)
    code, message = status[0]
    if code:
        error = MainProcessFailed(f"the main process stopped: {message}")
        error.exit_code = code
        raise error
    yield False


def world_sum(accelerator: Any, value: float) -> float:
    """``value`` summed over all processes (float64)."""
    if accelerator.num_processes == 1:
        return float(value)
    import torch

    total = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(total, reduction="sum")[0])


def is_sharded(accelerator: Any) -> bool:
    """True under FSDP and DeepSpeed (parameters, gradients or optimizer state in shards)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def is_deepspeed(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def configure_deepspeed(accelerator: Any, recipe: Any) -> None:
    """Fill what DeepSpeed's config needs from the recipe before ``prepare`` (there is no
    dataloader for accelerate to read the micro-batch size from): the micro-batch size, one
    accumulation step (sftkit accumulates its own micro-batches and marks the boundary), and
    the recipe's gradient clipping (DeepSpeed clips inside its step)."""
    if not is_deepspeed(accelerator):
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = recipe.batch_size
    config["gradient_accumulation_steps"] = 1
    config["gradient_clipping"] = float(recipe.max_grad_norm or 0.0)
    config.pop("train_batch_size", None)


@contextmanager
def accumulating(accelerator: Any, module: Any, sync: bool) -> Iterator[None]:
    """A micro-batch's forward/backward: gradients synchronised only on the last one (DDP's
    ``no_sync``, FSDP's ``set_requires_gradient_sync``; under DeepSpeed the accumulation
    boundary, so its engine steps once per optimizer step)."""
    if is_deepspeed(accelerator):
        accelerator.gradient_state._set_sync_gradients(sync)  # read by accelerate's DeepSpeed backward
        try:
            yield
        finally:
            accelerator.gradient_state._set_sync_gradients(True)
        return
    if sync:
        yield
        return
    with accelerator.no_sync(module):
        yield
