"""Rich consoles, and the one rule for showing data in the terminal: as plain Text, never markup."""
from __future__ import annotations

import os

from rich.console import Console
from rich.text import Text

console = Console(highlight=False, soft_wrap=False)
# Messages on stderr are not hard-wrapped: a long path in an error stays one piece that can be
# copied (the terminal wraps it softly).
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def plain(text: object, style: str = "") -> Text:
    """Data text as a Rich Text object: ``[link=...]`` and stray ``[/]`` stay literal."""
    return Text("" if text is None else str(text), style=style)


def excerpt(text: object, limit: int = 80) -> str:
    """A one-line excerpt of data text (newlines shown as ↵)."""
    flat = ("" if text is None else str(text)).replace("\r", "").replace("\n", "↵ ")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def progress_disabled() -> bool:
    """True when progress bars should not draw (SFTKIT_NO_PROGRESS=1 or not a terminal)."""
    return os.environ.get("SFTKIT_NO_PROGRESS", "") not in ("", "0")


SKIPPED_SHOWN = 20


def print_skipped(messages: list[str], limit: int = SKIPPED_SHOWN) -> None:
    """List lines left out by --skip-invalid on stderr: the first ``limit``, then a count."""
    for message in messages[:limit]:
        err_console.print(plain(f"skipped: {message}", "yellow"))
    if len(messages) > limit:
        err_console.print(plain(f"skipped: ... and {len(messages) - limit} more broken lines "
                                f"({len(messages)} in all; the JSON report lists every one)", "yellow"))
