"""The training progress bar: loss, learning rate, tokens/s and ETA (Rich, on stderr)."""
from __future__ import annotations


class Progress:
    """A Rich progress bar with loss, learning rate, tokens/s and ETA (or nothing)."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        from sftkit.console import err_console

        self.bar = RichProgress(
            TextColumn("train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} tok/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console, transient=False)
        self.task = self.bar.add_task("train", total=total, completed=start, loss="-", lr="-", speed="-")
        self.bar.start()

    def update(self, step: int, loss: float, lr: float, speed: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}", lr=f"{lr:.2e}", speed=f"{speed:,.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
