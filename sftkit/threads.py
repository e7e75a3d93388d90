"""How many CPU threads torch uses: the cores that are idle now, unless the user says otherwise.

On a shared CPU, OpenMP threads that outnumber the free cores spin-wait for each other: a
training step measured 25x slower with two threads on a busy 2-core machine than with one.
So a command that computes with torch on the CPU (train, eval) takes the cores that are idle
(the core count minus the one-minute load average, at least one) unless ``OMP_NUM_THREADS``
or ``SFTKIT_THREADS`` is set. On a GPU the choice only affects the data work around it.
"""
from __future__ import annotations

import os


def idle_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores not busy with other work: ``cores - load`` rounded to the nearest, at least one."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not available on this platform
            load = 0.0
    return max(1, min(cores, round(cores - load)))


def choose_threads() -> tuple[int, str]:
    """The torch thread count for this process and why (for the command's note)."""
    for variable in ("SFTKIT_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value), f"{variable}={value}"
    threads = idle_cores()
    return threads, f"{threads} of {os.cpu_count() or 1} cores idle"


def configure() -> str:
    """Set torch's CPU threads (see ``choose_threads``); returns the note to print."""
    import torch

    threads, why = choose_threads()
    torch.set_num_threads(threads)
    return f"torch uses {threads} CPU thread{'s' if threads != 1 else ''} ({why})"
