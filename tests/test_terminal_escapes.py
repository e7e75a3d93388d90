"""Terminal output is inert: no control character from data, keys, file names or messages
reaches the terminal raw, in any command or message.

The convention (``sftkit.console.visible``): ``\\n`` and ``\\t`` keep their meaning; every other
C0 control, DEL and the C1 controls are shown as ``\\xNN`` (``\\r`` as ``\\r``); bidi and
line-separator controls and lone surrogates as ``\\uNNNN``. The CLI tests run the real
command in a subprocess and look at the raw bytes of stdout and stderr: without colour (no
ESC byte at all may appear) and with colour forced (the only escapes are Rich's own SGR
colour codes).
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftkit.console import excerpt, inert_json, plain, visible

ROUND2 = Path(__file__).resolve().parent / "data" / "bad" / "round2"
ESCAPES = ROUND2 / "terminal_escapes.jsonl"

C0 = [chr(c) for c in range(0x20) if chr(c) not in "\n\t"]
C1 = [chr(c) for c in range(0x80, 0xA0)]
BIDI = list("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
UNSAFE = C0 + ["\x7f"] + C1 + BIDI
SEQUENCES = ["\x1b[2J", "\x1b]0;title\x07", "\x1b]8;;https://evil.example/\x1b\\x\x1b]8;;\x1b\\", "\x1b[6n", "\x1b[c",
             "\x1bP$q m\x1b\\", "\x9b2J", "\x1b]52;c;cHduZWQ=\x07"]
SGR = re.compile(r"\x1b\[[0-9;]*m")


def unsafe_in(text: str) -> list[str]:
    return [c for c in text if c in UNSAFE or "\ud800" <= c <= "\udfff"]


def assert_inert(raw: bytes, *, colour: bool = False) -> str:
    """The raw output of a command: valid UTF-8 with no control character (but Rich's SGR
    colour codes when colour was forced)."""
    text = raw.decode("utf-8")  # strict: a lone surrogate or stray byte would fail here
    if colour:
        text = SGR.sub("", text)
    assert unsafe_in(text) == [], [hex(ord(c)) for c in unsafe_in(text)][:10]
    for byte in (b"\x1b", b"\x07", b"\x00", b"\x08", b"\x7f", b"\r"):
        assert byte not in (SGR.sub("", raw.decode()).encode() if colour else raw), byte
    return text


# -- the rule itself -------------------------------------------------------------------------------
@pytest.mark.parametrize("char", UNSAFE, ids=[f"U+{ord(c):04X}" for c in UNSAFE])
def test_every_control_is_shown_visibly(char):
    shown = visible(f"a{char}b")
    assert unsafe_in(shown) == [] and shown.startswith("a\\") and shown.endswith("b")
    assert visible(shown) == shown  # showing twice changes nothing
    assert plain(f"a{char}b").plain == shown
    assert unsafe_in(excerpt(f"a{char}b")) == []


def test_newlines_and_tabs_keep_their_meaning_and_cr_is_shown():
    assert visible("a\nb\tc\rd") == "a\nb\tc\\rd"
    assert visible("\x1b[2J\x07\x9b\u202e") == "\\x1b[2J\\x07\\x9b\\u202e"
    assert excerpt("a\r\nb\nc\rd") == "a↵ b↵ c\\rd"


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_visible_leaves_ordinary_text_alone_and_removes_every_control(text):
    shown = visible(text)
    assert unsafe_in(shown) == []
    assert visible(shown) == shown
    if not unsafe_in(text):
        assert shown == text


@given(st.text(), st.integers(min_value=2, max_value=120))
@settings(max_examples=200, deadline=None)
def test_excerpts_are_inert_within_their_limit_and_never_cut_an_escape(text, limit):
    shown = excerpt(text, limit)
    assert unsafe_in(shown) == [] and "\n" not in shown
    assert len(shown) <= limit
    flat = text.replace("\r\n", "\n").replace("\n", "↵ ")
    if len(visible(flat)) <= limit:
        assert shown == visible(flat)
    else:
        assert shown.endswith("…")
        prefix = shown[:-1]
        assert visible(flat).startswith(prefix)
        cuts, at = {0}, 0
        for char in flat:  # the places between whole characters or whole escapes
            at += len(visible(char))
            cuts.add(at)
        assert len(prefix) in cuts


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
@settings(max_examples=200, deadline=None)
def test_inert_json_is_the_same_json_value(text):
    dumped = inert_json(json.dumps({"t": text}, ensure_ascii=False))
    assert unsafe_in(dumped) == []
    assert json.loads(dumped) == {"t": text}


def test_rich_prints_plain_text_inert_even_on_a_colour_terminal():
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="truecolor", width=80)
    console.print(plain("".join(UNSAFE) + "".join(SEQUENCES), "bold red"))
    out = SGR.sub("", buffer.getvalue())
    assert "\x1b" not in out and unsafe_in(out) == []


# -- the real commands, raw bytes --------------------------------------------------------------------
def sftkit(*args, colour: bool = False, cwd: Path | None = None, timeout: int = 300):
    env = {**os.environ, "SFTKIT_NO_PROGRESS": "1", "COLUMNS": "120"}
    env.pop("FORCE_COLOR", None), env.pop("NO_COLOR", None)
    if colour:
        env.update(FORCE_COLOR="1", TERM="xterm-256color")
    else:
        env.update(TERM="dumb")
    return subprocess.run([sys.executable, "-m", "sftkit", *map(str, args)], capture_output=True, env=env,
                          timeout=timeout, cwd=cwd)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """The escape corpus under a file name that itself holds ESC, BEL and C1 sequences."""
    folder = tmp_path_factory.mktemp("esc")
    path = folder / "data \x1b]0;owned\x07 \x1b[2J\x9b.jsonl"
    path.write_bytes(ESCAPES.read_bytes())
    return path


@pytest.mark.parametrize("colour", [False, True], ids=["plain", "colour"])
def test_validate_summary_is_inert(hostile, tmp_path, colour):
    done = sftkit("validate", hostile, "--no-tokenizer", "--report-dir", tmp_path / "r", colour=colour)
    assert done.returncode == 1, done.stderr.decode()
    out = assert_inert(done.stdout, colour=colour)
    assert_inert(done.stderr, colour=colour)
    flat = re.sub(r"\s+", "", SGR.sub("", out))
    assert "\\x1b]0;owned\\x07" in flat  # the file name, shown
    assert "\\x00\\x01\\x02" in flat and "\\x1b]8;;https://evil.example/" in flat  # the data, in the excerpts
    assert "note\\x1b[31m" in flat  # a key, in an issue message
    # The reports keep the data exactly as it was (nothing is lost, only the terminal is spared).
    report = json.loads((tmp_path / "r" / "validate.json").read_text())
    assert report["dataset"]["path"] == str(hostile)


@pytest.mark.parametrize("fmt, colour", [("rich", False), ("rich", True), ("plain", False), ("json", False)])
def test_preview_is_inert_in_every_format(hostile, fmt, colour):
    done = sftkit("preview", hostile, "--model", "tiny-random", "--format", fmt, "-n", "4", colour=colour)
    assert done.returncode == 0, done.stderr.decode()
    out = assert_inert(done.stdout, colour=colour)
    assert_inert(done.stderr, colour=colour)
    if fmt == "json":
        texts = "".join(t["text"] for e in json.loads(out)["examples"] for t in e["tokens"])
        assert "\x1b]8;;https://evil.example/" in texts  # the JSON value is still the data itself
    elif fmt == "plain":
        assert '"\\u001b"' in out  # one token per line, as a JSON string
    else:
        assert "\\x1b" in out


def test_error_lines_naming_a_file_key_or_value_are_inert(hostile, tmp_path):
    missing = tmp_path / "gone \x1b]0;t\x07\x1b[2J.jsonl"
    runs = [
        (sftkit("validate", missing, "--no-tokenizer"), "no such file or folder"),
        (sftkit("validate", ROUND2 / "escape_keys.jsonl", "--no-tokenizer"), "question\\x1b]0;title\\x07"),
        (sftkit("validate", hostile, "--fail-on", "\x1b[2J\x07"), "Invalid value for '--fail-on'"),
        (sftkit("validate", hostile, "--no-tokenizer", "--spec", tmp_path / "s\x1b[2J.yaml"), "does not exist"),
        (sftkit("validate", hostile, "--no-tokenizer", "--loader-option", "delimiter=\x1b"), "has no option"),
        (sftkit("validate", hostile, "--no-tokenizer", "--report-dir", hostile / "\x1b[2Jsub"), "is a file, not a folder"),
        (sftkit("preview", hostile, "--template", "\x1b]0;t\x07"), "\\x1b]0;t\\x07"),
    ]
    for done, fragment in runs:
        assert done.returncode == 2, done.stderr.decode()
        err = assert_inert(done.stderr)
        assert_inert(done.stdout)
        assert fragment in re.sub(r"\s+", " ", err), err
        assert "Traceback" not in err


def test_a_spec_with_escapes_in_its_values_is_shown_inert(hostile, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text('name: "x\\e[2J"\nformat: alpaca\ntemplate: "\\e]0;title\\a"\n', "utf-8")
    done = sftkit("validate", hostile, "--spec", spec, "--no-tokenizer")
    assert done.returncode == 2
    assert "\\x1b]0;title\\x07" in assert_inert(done.stderr)


def test_skipped_lines_are_listed_inert(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"instruction": "Say hi.", "output": "hi"}\n{"\x1b[2J": broken \x1b]0;t\x07\n'
                     b'\xff\x1b[2J\n{"instruction": "Say yo.", "output": "yo"}\n')
    done = sftkit("validate", data, "--no-tokenizer", "--skip-invalid", "--report-dir", tmp_path / "r",
                  "--only", "schema")
    assert done.returncode == 0, done.stderr.decode()
    assert assert_inert(done.stderr).count("skipped:") == 2


def test_eval_summary_is_inert(hostile, tmp_path):
    done = sftkit("eval", "--model", "tiny-random", "--data", hostile, "--max-new-tokens", "3", "--resamples", "100",
                  "--report-dir", tmp_path / "e")
    assert done.returncode == 0, done.stderr.decode()
    out = assert_inert(done.stdout)
    assert_inert(done.stderr)
    assert "\\x1b]0;owned\\x07" in re.sub(r"\s+", "", out)
