"""The HTML page of a validate result: summary, issues, charts, one section per validator,
flagged rows with their text, and token/mask views. Every data string goes through ``esc``."""
from __future__ import annotations

from typing import Any

from sftkit import Result
from sftkit.plugins.reporters.html_base import (bar_chart, cards, esc, excerpt, histogram, page, section, table,
                                                token_view)

ROWS_PER_ISSUE = 20


def _pill(severity: str) -> str:
    return f'<span class="pill {esc(severity)}">{esc(severity)}</span>'


def _rows_text(rows: list[int], limit: int = 12) -> str:
    shown = ", ".join(map(str, rows[:limit]))
    return shown + (f", … ({len(rows)} rows)" if len(rows) > limit else "")


def _stats_table(stats: dict[str, Any]) -> str:
    rows = []
    for key, value in stats.items():
        if key == "lengths_sample":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in list(value.items())[:30])
        elif isinstance(value, list):
            value = ", ".join(map(str, value[:30]))
        rows.append((key, value))
    return table(["figure", "value"], rows, sortable=False) if rows else ""


def _flagged_rows(issue: dict, examples: dict[str, dict]) -> str:
    rows = []
    for row in issue["rows"][:ROWS_PER_ISSUE]:
        view = examples.get(str(row))
        if view is None:
            continue
        prompt = f'<div class="text">{esc(excerpt(view["prompt"], 400))}</div>'
        response = f'<div class="text">{esc(excerpt(view["response"], 400))}</div>'
        rows.append((row, prompt, response))
    if not rows:
        return ""
    more = len(issue["rows"]) - len(rows)
    note = f'<p class="muted">{more} more rows: see the JSON report</p>' if more > 0 else ""
    return table(["row", "prompt", "response"], rows, raw_html_columns=(1, 2)) + note


def _charts(stats: dict[str, Any]) -> str:
    parts = []
    tok = stats.get("tokenization") or {}
    if tok.get("lengths_sample"):
        limit = tok.get("max_length")
        parts.append("<h3>Token lengths (prompt + response)</h3>")
        parts.append(histogram(tok["lengths_sample"], marker=limit, marker_label=f"max length {limit}"))
        parts.append(f'<p class="muted">p50 {esc(tok.get("tokens_p50"))}, p95 {esc(tok.get("tokens_p95"))}, max '
                     f'{esc(tok.get("tokens_max"))}; {esc(tok.get("over_max_length"))} rows over the max length; '
                     f'padding waste {esc(tok.get("padding_waste"))} at batch size {esc(tok.get("batch_size"))}</p>')
    bal = stats.get("balance") or {}
    if bal.get("labels"):
        parts.append("<h3>Labels</h3>" + bar_chart(list(bal["labels"].items())[:30]))
    if bal.get("tasks"):
        parts.append("<h3>Tasks / categories (top 20)</h3>" + bar_chart(list(bal["tasks"].items())[:20], color="#54a24b"))
    return "".join(parts) or '<p class="muted">no charts: no tokenizer, labels or tasks</p>'


def render(result: Result) -> str:
    """The whole page for a ``validate`` result."""
    data = result.data
    summary, dataset, stats = data["summary"], data["dataset"], data.get("stats", {})
    examples = data.get("examples", {})
    issues = data["issues"]
    body = [section("Summary", cards([
        ("rows", summary["rows"]), ("errors", summary["errors"]), ("warnings", summary["warnings"]),
        ("infos", summary["infos"]), ("spec", dataset.get("spec")), ("template", dataset.get("template")),
        ("masking", dataset.get("masking")), ("max length", dataset.get("max_length")),
    ]) + f'<p class="muted">{esc(dataset.get("path"))}: {esc(dataset.get("note"))}</p>')]
    skipped = dataset.get("skipped_lines") or []
    if skipped:  # --skip-invalid: say plainly that these lines were not checked
        body.append(section(f"Skipped lines ({len(skipped)}, not checked)",
                            table(["line", "row", "message"], [(e.get("line"), e.get("row"), e.get("message"))
                                                               for e in skipped], table_id="skipped"),
                            anchor="skipped"))
    issue_rows = [(_pill(i["severity"]), i["validator"], i["code"], i["message"], len(i["rows"]), _rows_text(i["rows"]))
                  for i in issues]
    body.append(section("Issues", table(["severity", "validator", "code", "message", "rows", "row indices"],
                                        issue_rows, table_id="issues", filterable=True, raw_html_columns=(0,))
                        if issues else '<p><span class="pill ok">no issues</span></p>'))
    body.append(section("Distributions", _charts(stats)))
    for name in dataset.get("validators", []):
        mine = [i for i in issues if i["validator"] == name]
        parts = []
        for issue in mine:
            parts.append(f'<h3>{_pill(issue["severity"])} {esc(issue["code"])}</h3><p>{esc(issue["message"])}</p>')
            parts.append(_flagged_rows(issue, examples))
        if not mine:
            parts.append('<p><span class="pill ok">no issues</span></p>')
        if isinstance(stats.get(name), dict):
            parts.append("<h3>Figures</h3>" + _stats_table(stats[name]))
        body.append(section(f"Validator: {name}", "".join(parts), anchor=f"v-{name}"))
    views = data.get("token_views", [])
    if views:
        parts = ['<p class="muted">green: trained tokens; grey: masked (labels -100); yellow: partial weight</p>']
        for view in views:
            parts.append(f'<h3>row {esc(view["row"])}: {esc(view["reason"])} ({esc(view["trained"])} trained of '
                         f'{esc(view["length"])} tokens)</h3>')
            parts.append(token_view([(text, weight) for text, weight in view["tokens"]]))
        body.append(section("Token / mask view", "".join(parts), anchor="tokens"))
    subtitle = f'{dataset.get("path")} · {summary["rows"]} rows · {summary["errors"]} errors, {summary["warnings"]} warnings'
    if skipped:
        subtitle += f" · {len(skipped)} broken lines skipped"
    return page(result.title, subtitle, "".join(body))
