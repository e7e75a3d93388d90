"""Rich consoles, and the one rule for showing data in the terminal: as plain, inert Text.

Strings from data, keys, file names and messages never reach the terminal raw: ``plain()``
(the one place data text becomes Rich Text) and ``excerpt()`` show control characters
visibly, so a row cannot clear the screen, set the window title, plant an OSC 8 hyperlink,
query the terminal or reorder a line with bidi overrides. The convention (``visible``):
``\\n`` and ``\\t`` keep their meaning; every other C0 control, DEL and the C1 controls
(U+0080-U+009F) are written as ``\\xNN`` (``\\r`` as ``\\r``); Unicode bidi and line
separator controls (U+061C, U+200E/F, U+2028/9, U+202A-U+202E, U+2066-U+2069) and lone
surrogates as ``\\uNNNN``. The result holds no control character, so showing it twice
changes nothing.
"""
from __future__ import annotations

import os
import re

from rich.console import Console
from rich.text import Text

console = Console(highlight=False, soft_wrap=False)
# Messages on stderr are not hard-wrapped: a long path in an error stays one piece that can be
# copied (the terminal wraps it softly).
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

# C0 controls but \t and \n, DEL, C1 controls; bidi embedding/override/isolate marks and the
# line/paragraph separators (they can make a line read differently from its bytes); lone
# surrogates (they cannot even be encoded for the terminal).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                     "\u2066-\u2069\ud800-\udfff]")
# The same set without the C0 controls, which json.dumps already escapes.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


_UNSAFE_SPLIT = re.compile(f"({_UNSAFE.pattern})")


def _show(match: re.Match) -> str:
    return _show_char(match.group())


def _show_char(char: str) -> str:
    if char == "\r":
        return "\\r"
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: object) -> str:
    """``text`` with every control character shown as an escape (see the module docstring)."""
    text = "" if text is None else str(text)
    return _UNSAFE.sub(_show, text) if _UNSAFE.search(text) else text


def inert_json(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with DEL, C1 and bidi controls
    written as ``\\uNNNN`` escapes: the same JSON value, but safe to print to a terminal."""
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def plain(text: object, style: str = "") -> Text:
    """Data text as a Rich Text object: ``[link=...]`` and stray ``[/]`` stay literal, and
    control characters are shown visibly (``visible``) instead of reaching the terminal."""
    return Text(visible(text), style=style)


def excerpt(text: object, limit: int = 80) -> str:
    """A one-line excerpt of data text (newlines shown as ↵, control characters visibly), at
    most ``limit`` characters; an escape is never cut in two."""
    flat = ("" if text is None else str(text)).replace("\r\n", "\n").replace("\n", "↵ ")
    shown = visible(flat)
    if len(shown) <= limit:
        return shown
    out, used = [], 0
    for index, piece in enumerate(_UNSAFE_SPLIT.split(flat)):
        piece = _show_char(piece) if index % 2 else piece  # odd pieces: one control character each
        room = limit - 1 - used
        if len(piece) > room:
            if not index % 2:
                out.append(piece[:room])
            break
        out.append(piece)
        used += len(piece)
    return "".join(out) + "…"


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
