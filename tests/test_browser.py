"""Report safety, checked in a real browser (headless Chromium, tests/browser.py).

Every report kind (validate, train, eval) is rendered from a real result whose data carries
hostile strings: the captured results in tests/data/browser/ (a validate, a train and an eval
run on tests/data/browser/hostile.jsonl with the hostile spec.yaml beside it, tiny-random
model), with every string value poisoned again at test time. In Chromium the page must run
no injected script (no ``window.__pwned``, no dialog), log no console error, keep every
payload as visible text, and its sortable tables must sort and its filters filter under real
mouse and key events. One validate report is made end to end through the CLI.

To refresh the captured results after a change of a result's shape, rerun the three commands
in the docstring of ``test_captured_results_are_current``.

Without Chromium the browser tests skip with the reason; the static checks (the HTML text,
and Rich's HTML export of hostile data) always run.
"""
from __future__ import annotations

import html as html_module
import importlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sftkit import Result

HERE = Path(__file__).resolve().parent
CAPTURED = HERE / "data" / "browser"
KINDS = ("validate", "train", "eval")

POISON = [
    "<script>window.__pwned='poison-script';alert('poison')</script>",
    "<img src=x onerror=\"window.__pwned='poison-img'\">",
    "\"><svg/onload=\"window.__pwned='poison-attr'\">",
    "javascript:window.__pwned='poison-url'",
    "{{ 7*7 }}",
    "[link=javascript:alert(1)]x[/link] [/]",
]
# Payloads of tests/data/browser/hostile.jsonl and spec.yaml that must show as text.
CAPTURED_TEXT = ["<script>window.__pwned='script';alert('script')</script>", "{{ 7*7 }}",
                 "[link=javascript:alert(1)]x[/link] [/]"]


def poison(value, index: list[int] | None = None):
    """Every string value of a result, with a hostile payload appended (keys stay as they are)."""
    index = index if index is not None else [0]
    if isinstance(value, str):
        index[0] += 1
        return value + POISON[index[0] % len(POISON)]
    if isinstance(value, list):
        return [poison(v, index) for v in value]
    if isinstance(value, dict):
        return {k: poison(v, index) for k, v in value.items()}
    return value


def captured(kind: str) -> dict:
    return json.loads((CAPTURED / f"{kind}.json").read_text(encoding="utf-8"))


def render(kind: str, data: dict, title: str = "report " + POISON[0]) -> str:
    module = importlib.import_module(f"sftkit.plugins.reporters.html_{kind}")
    return module.render(Result(kind, title, data))


# -- static checks (no browser) ------------------------------------------------------------------
class Markup(HTMLParser):
    """The elements and attributes of a page, as a browser's parser sees them."""

    URL_ATTRS = ("href", "src", "action", "formaction", "xlink:href", "data", "srcdoc")

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.dangerous: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            squeezed = re.sub(r"[\s\x00-\x1f]", "", value or "").lower()
            if name.startswith("on") or (name in self.URL_ATTRS and squeezed.startswith(("javascript:", "data:text/html"))):
                self.dangerous.append(f"<{tag} {name}={value!r}>")


@pytest.mark.parametrize("kind", KINDS)
def test_report_html_escapes_every_payload(kind):
    html = render(kind, poison(captured(kind)))
    markup = Markup(html)
    assert markup.dangerous == []
    assert markup.tags.count("script") == 1  # only the page's own script
    assert not {"img", "iframe", "object", "embed", "a", "form", "textarea"} & set(markup.tags)
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S | re.I)
    assert len(scripts) == 1 and "__pwned" not in scripts[0]
    assert "&lt;script&gt;window.__pwned=&#x27;poison-script&#x27;" in html
    assert "{{ 7*7 }}" in html  # not evaluated as a template


def test_rich_markup_in_data_stays_plain_text_in_terminal_and_rich_html_export(run_cli, monkeypatch):
    from sftkit.console import console

    monkeypatch.setattr(console, "record", True)
    console.export_text(clear=True)
    path = HERE / "data" / "bad" / "rich_markup.jsonl"
    result = run_cli("preview", path, "--model", "tiny-random", "-n", "2")
    assert result.exit_code == 0, result.stderr
    out = squash(result.stdout)
    assert squash("[link=javascript:alert(1)]click[/link]") in out
    assert squash("stray [/] closer [/bold]") in out
    exported = console.export_html(clear=True)
    assert "javascript:" not in re.sub(r"\[link=javascript:alert\(1\)\]", "", exported)
    assert "<a " not in exported.lower()
    assert Markup(exported).dangerous == [] and "a" not in Markup(exported).tags
    text = html_module.unescape(re.sub(r"<[^>]+>", "", exported))  # token spans joined back
    assert "[link=javascript:alert(1)]click[/link]" in text
    assert "<script>alert(1)</script>" in text


def test_rich_markup_in_data_and_file_names_stays_plain_in_validate_and_eval(run_cli, tmp_path):
    folder = tmp_path / "[link=javascript:alert(1)]x["  # with the file name: ...x[/link] [bold].jsonl
    folder.mkdir()
    path = folder / "link] [bold].jsonl"
    row = {"instruction": "[link=javascript:alert(1)]x[/link] [/] [bold red]loud", "output": "[/]"}
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n"
                    + json.dumps({"instruction": "[/bold] ok", "output": "[link=javascript:alert(1)]y[/link]"}) + "\n",
                    encoding="utf-8")
    shown_path = str(tmp_path) + "/[link=javascript:alert(1)]x[/link] [bold].jsonl"
    validate = run_cli("validate", path, "--no-tokenizer", "--report-dir", tmp_path / "v", "--fail-on", "warning")
    assert validate.exit_code == 1, validate.stderr  # the exact duplicate
    flat = squash(validate.stdout)
    assert squash(shown_path) in flat
    assert squash("row 0: [link=javascript:alert(1)]x[/link] [/] [bold red]loud → [/]") in flat
    evaluate = run_cli("eval", "--model", "tiny-random", "--data", path, "--max-new-tokens", "2", "--resamples", "100",
                       "--report-dir", tmp_path / "e")
    assert evaluate.exit_code == 0, evaluate.stderr
    assert squash("sftkit eval: " + shown_path) in squash(evaluate.stdout)
    for result in (validate, evaluate):
        assert "Traceback" not in result.stdout + result.stderr


def squash(text: str) -> str:
    """Output without whitespace (Rich wraps long lines at the terminal width)."""
    return re.sub(r"\s+", "", text)


# -- in Chromium ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    from browser import Browser, missing_reason
    from conftest import skip_or_fail

    reason = missing_reason()
    if reason:
        skip_or_fail(reason, "SFTKIT_REQUIRE_BROWSER")
    with Browser() as instance:
        yield instance


INJECTION_STATE = """(function(){
  var attrs = [];
  document.querySelectorAll('*').forEach(function(e){
    Array.prototype.forEach.call(e.attributes, function(a){
      var v = (a.value || '').trim().toLowerCase();
      if (a.name.toLowerCase().indexOf('on') === 0 || v.indexOf('javascript:') === 0) attrs.push(e.tagName + ' ' + a.name);
    });
  });
  return {pwned: window.__pwned === undefined ? null : String(window.__pwned),
          scripts: document.scripts.length,
          injected: Array.prototype.filter.call(document.scripts, function(s){ return s.text.indexOf('__pwned') >= 0; }).length,
          images: document.images.length,
          duplicate_ids: (function(){ var seen = {}, dup = [];
            document.querySelectorAll('[id]').forEach(function(e){ if (seen[e.id]) dup.push(e.id); seen[e.id] = 1; });
            return dup; })(),
          attrs: attrs,
          text: document.body.innerText};
})()"""

SORTABLE_COLUMNS = """(function(){
  var out = [];
  document.querySelectorAll('table.sortable').forEach(function(t, ti){
    if (!t.id || !t.tBodies[0] || t.tBodies[0].rows.length < 2) return;
    var n = t.tHead.rows[0].cells.length;
    for (var c = 0; c < n; c++) {
      var vals = Array.prototype.map.call(t.tBodies[0].rows, function(r){ return r.cells[c] ? (r.cells[c].getAttribute('data-v') || r.cells[c].textContent) : ''; });
      if (new Set(vals).size > 1) { out.push([t.id, c]); }
    }
  });
  return out;
})()"""


def column_values(page, table_id: str, col: int) -> list[str]:
    return page.evaluate(
        f"Array.prototype.map.call(document.getElementById({json.dumps(table_id)}).tBodies[0].rows, function(r){{"
        f" var c = r.cells[{col}]; return c.getAttribute('data-v') || c.textContent; }})")


def in_order(values: list[str], ascending: bool) -> bool:
    """The page's order: numeric when both parse as numbers, else text (locale order)."""
    def number(text: str):
        match = re.match(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text)
        return float(match.group()) if match else None

    numbers = [number(v) for v in values]
    if all(n is not None for n in numbers):
        pairs = list(zip(numbers, numbers[1:]))
        return all((a <= b) if ascending else (a >= b) for a, b in pairs)
    return True  # text order is checked in the browser (localeCompare), see check_sorting


def check_no_injection(page, expected_text: list[str]) -> None:
    state = page.evaluate(INJECTION_STATE)
    assert state["pwned"] is None, f"an injected script ran: {state['pwned']}"
    assert state["injected"] == 0 and state["scripts"] == 1
    assert state["images"] == 0
    assert state["attrs"] == []
    assert state["duplicate_ids"] == []  # a filter box finds its table by id
    assert page.problems() == []
    for text in expected_text:
        assert text in state["text"], text


def check_sorting(page) -> int:
    """Click the header of every sortable column that has differing values: ascending, then descending."""
    checked = 0
    for table_id, col in page.evaluate(SORTABLE_COLUMNS):
        before = sorted(column_values(page, table_id, col))
        for ascending in (True, False):
            page.click(f"#{table_id} thead th:nth-child({col + 1})")
            values = column_values(page, table_id, col)
            assert sorted(values) == before  # the same rows, reordered
            assert in_order(values, ascending), (table_id, col, values)
            ordered = page.evaluate(
                f"(function(v){{ for (var i = 1; i < v.length; i++) {{ var x = v[i-1], y = v[i];"
                f" var nx = parseFloat(x), ny = parseFloat(y);"
                f" var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);"
                f" if ({'c > 0' if ascending else 'c < 0'}) return false; }} return true; }})({json.dumps(values)})")
            assert ordered, (table_id, col, ascending, values)
        checked += 1
    return checked


def check_filtering(page) -> int:
    """Type a word of a row into each filter box: exactly the rows containing it stay visible."""
    filters = page.evaluate("Array.prototype.map.call(document.querySelectorAll('input.filter'),"
                            " function(i){ return i.getAttribute('data-table'); })")
    checked = 0
    for index, table_id in enumerate(filters):
        rows = page.evaluate(f"Array.prototype.map.call(document.getElementById({json.dumps(table_id)}).tBodies[0].rows,"
                             " function(r){ return r.textContent.toLowerCase(); })")
        words = sorted({w for text in rows for w in re.findall(r"[a-z_]{4,}", text)},
                       key=lambda w: (abs(sum(w in r for r in rows) - len(rows) / 2), w))
        if len(rows) < 2 or not words:
            continue
        query = words[0]
        page.type_text(f"input.filter[data-table={json.dumps(table_id)}]", query)
        shown = page.evaluate(f"Array.prototype.map.call(document.getElementById({json.dumps(table_id)}).tBodies[0].rows,"
                              " function(r){ return r.style.display !== 'none'; })")
        assert shown == [query in text for text in rows], (table_id, query)
        assert 0 < sum(shown) <= len(rows)
        checked += 1
    return checked


@pytest.mark.browser
@pytest.mark.parametrize("kind", KINDS)
def test_hostile_report_is_inert_and_interactive_in_chromium(browser, tmp_path, kind):
    path = tmp_path / f"{kind}.html"
    path.write_text(render(kind, poison(captured(kind))), encoding="utf-8")
    page = browser.open(path)
    check_no_injection(page, ["report " + POISON[0], POISON[0], POISON[4], POISON[5]])
    assert check_sorting(page) >= 1
    assert check_filtering(page) >= 1
    check_no_injection(page, [])  # clicking and typing ran nothing either


@pytest.mark.browser
@pytest.mark.parametrize("kind", KINDS)
def test_captured_hostile_data_shows_as_text(browser, tmp_path, kind):
    path = tmp_path / f"{kind}.html"
    path.write_text(render(kind, captured(kind), title=f"sftkit {kind}"), encoding="utf-8")
    page = browser.open(path)
    check_no_injection(page, [] if kind == "train" else CAPTURED_TEXT)


@pytest.mark.browser
def test_csp_blocks_injected_scripts_even_without_escaping(browser, tmp_path, monkeypatch):
    """Defence in depth: with escaping switched off on purpose, the page's Content-Security-Policy
    (only the page script's hash may run) still stops injected scripts and event handlers,
    while the page's own script keeps working."""
    from sftkit.plugins.reporters import html_base, html_validate

    def no_escape(value):
        return "" if value is None else str(value)

    monkeypatch.setattr(html_base, "esc", no_escape)
    monkeypatch.setattr(html_validate, "esc", no_escape)
    path = tmp_path / "unescaped.html"
    page_html = render("validate", poison(captured("validate")))
    assert "<script>window.__pwned='poison-script'" in page_html  # the injection is really there
    path.write_text(page_html, encoding="utf-8")
    page = browser.open(path)
    state = page.evaluate(INJECTION_STATE)
    assert state["pwned"] is None
    problems = page.problems()
    assert problems and all("Content Security Policy" in p for p in problems)
    assert not any(p.startswith("dialog") for p in problems)
    assert check_sorting(page) >= 1  # the page's own script still runs


@pytest.mark.browser
def test_validate_report_end_to_end_through_the_cli(browser, run_cli, tmp_path):
    data = tmp_path / "x<img src=x onerror=\"window.__pwned='path'\">.jsonl"
    data.write_bytes((CAPTURED / "hostile.jsonl").read_bytes())
    reports = tmp_path / "reports"
    result = run_cli("validate", data, "--spec", CAPTURED / "spec.yaml", "--model", "tiny-random",
                     "--report-dir", reports)
    assert result.exit_code == 1, result.stderr  # the hostile data has real issues (duplicates, empty output)
    page = browser.open(reports / "validate.html")
    check_no_injection(page, CAPTURED_TEXT + [data.name])
    assert check_sorting(page) >= 1
    assert check_filtering(page) >= 1


@pytest.mark.browser
def test_rich_html_export_of_hostile_data_runs_nothing(browser, tmp_path):
    from rich.console import Console

    from sftkit.console import plain

    console = Console(record=True, width=100, file=open("/dev/null", "w"))
    for payload in POISON + CAPTURED_TEXT:
        console.print(plain(payload))
    path = tmp_path / "rich.html"
    path.write_text(console.export_html(), encoding="utf-8")
    page = browser.open(path)
    state = page.evaluate(INJECTION_STATE)
    assert state["pwned"] is None and state["attrs"] == [] and state["images"] == 0
    assert page.problems() == []
    for payload in POISON:
        assert payload in state["text"]


def test_captured_results_are_current():
    """The captured results were made with (from the repository root, then /tmp/hx/ paths
    rewritten to data/):

        sftkit validate tests/data/browser/hostile.jsonl --spec tests/data/browser/spec.yaml --model tiny-random \\
            --eval-data tests/data/browser/hostile.jsonl --report-dir /tmp/hx/v
        sftkit train --data tests/data/browser/hostile.jsonl --spec tests/data/browser/spec.yaml \\
            --eval-data tests/data/browser/hostile.jsonl --eval-steps 1 --model tiny-random --max-steps 2 \\
            --batch-size 4 --no-validate --output-dir /tmp/hx/run
        sftkit eval --model /tmp/hx/run --data tests/data/browser/hostile.jsonl --spec tests/data/browser/spec.yaml \\
            --limit 6 --max-new-tokens 4 --resamples 100 --report-dir /tmp/hx/eval

    Each renders without error today (a shape change that breaks a renderer fails here first).
    """
    for kind in KINDS:
        html = render(kind, captured(kind))
        assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
