"""The HTML page of ``sftkit eval``: summary, warnings, confusion matrices, base vs tuned per metric, and
every example with both outputs and their scores, sortable by score change and filterable.

Every string from the data or the models goes through ``esc``; the page is self-contained.
"""
from __future__ import annotations

from typing import Any

from sftkit.plugins.reporters.html_base import cards, esc, excerpt, page, section, table

ROLES = ("base", "tuned")


def _entry(value: Any) -> dict | None:
    """A metric cell as {value, low, high} (a bare number has no interval)."""
    if isinstance(value, dict) and "value" in value:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"value": float(value)}
    return None


def _fmt(entry: dict | None, signed: bool = False) -> str:
    if not entry:
        return ""
    sign = "+" if signed else ""
    text = f"{entry['value']:{sign}.3f}"
    if "low" in entry and "high" in entry:
        text += f" [{entry['low']:{sign}.3f}, {entry['high']:{sign}.3f}]"
    return text


def _interval_svg(entries: dict[str, dict], width: int = 220, height: int = 34) -> str:
    """Base and tuned intervals of one metric on a shared axis (inline SVG)."""
    points = [v for e in entries.values() for v in (e.get("low", e["value"]), e.get("high", e["value"]), e["value"])]
    lo, hi = min(points), max(points)
    span = (hi - lo) or 1.0
    colors = {"base": "#8a939d", "tuned": "#2f6fb0"}
    parts = [f'<svg width="{width}" height="{height}" role="img">']
    for i, (role, e) in enumerate(entries.items()):
        y = 10 + i * 14

        def x(v: float) -> float:
            return 6 + (width - 12) * (v - lo) / span

        color = colors.get(role, "#4c78a8")
        parts.append(f'<line x1="{x(e.get("low", e["value"])):.1f}" y1="{y}" x2="{x(e.get("high", e["value"])):.1f}" '
                     f'y2="{y}" stroke="{color}" stroke-width="3"><title>{esc(role)} {esc(_fmt(e))}</title></line>')
        parts.append(f'<circle cx="{x(e["value"]):.1f}" cy="{y}" r="4" fill="{color}"></circle>')
    parts.append("</svg>")
    return "".join(parts)


def _metrics_section(data: dict, roles: list[str]) -> str:
    metrics = data.get("metrics") or {}
    if not metrics:
        return section("Metrics", '<p class="muted">no metrics</p>')
    models = data.get("models") or {}
    headers = ["metric"] + [f"{role}: {(models.get(role) or {}).get('name', role)}" for role in roles]
    reference = data.get("reference")
    if reference:
        return _several_metrics_section(data, roles, reference, headers)
    compared = len(roles) == 2
    if compared:
        headers += ["difference (tuned - base)", "p-value", "verdict"]
    headers.append("intervals (grey base, blue tuned)")
    rows = []
    for sub, entry in metrics.items():
        entry = entry if isinstance(entry, dict) else {}
        cells: list[Any] = [sub] + [_fmt(_entry(entry.get(role))) for role in roles]
        if compared:
            diff = entry.get("difference")
            if isinstance(diff, dict):
                verdict = ("better (outside the CI)" if diff.get("low", 0) > 0 else
                           "worse (outside the CI)" if diff.get("high", 0) < 0 else "within the noise")
                cells += [_fmt(diff, signed=True), f"{float(diff.get('p_value', float('nan'))):.3f}", verdict]
            else:
                base, tuned = _entry(entry.get("base")), _entry(entry.get("tuned"))
                delta = tuned["value"] - base["value"] if base and tuned else None
                cells += [f"{delta:+.3f}" if delta is not None else "", "", ""]
        shown = {role: _entry(entry.get(role)) for role in roles if _entry(entry.get(role))}
        cells.append(_interval_svg(shown) if shown else "")
        rows.append(cells)
    conf = (data.get("bootstrap") or {}).get("confidence", 0.95)
    note = (f'<p class="muted">values with their {conf:.0%} percentile bootstrap interval '
            f'({esc((data.get("bootstrap") or {}).get("resamples", "?"))} resamples, seed '
            f'{esc((data.get("bootstrap") or {}).get("seed", "?"))}); the difference uses a paired bootstrap on the '
            f'same resampled rows; p-value: {esc((data.get("bootstrap") or {}).get("p_value", ""))}.</p>')
    return section("Metrics: base vs tuned", note + table(headers, rows, table_id="metrics-table",
                                                           raw_html_columns=[len(headers) - 1]), "metrics")


def _several_metrics_section(data: dict, roles: list[str], reference: str, headers: list[str]) -> str:
    """N-way: one column per model, then each model minus the reference with p and Holm's p."""
    others = [role for role in roles if role != reference]
    headers = headers + [f"{role} - {reference} (p; Holm p)" for role in others] + ["intervals"]
    rows = []
    for sub, entry in (data.get("metrics") or {}).items():
        entry = entry if isinstance(entry, dict) else {}
        cells: list[Any] = [sub] + [_fmt(_entry(entry.get(role))) for role in roles]
        for role in others:
            diff = (entry.get("comparisons") or {}).get(role)
            if isinstance(diff, dict):
                verdict = " outside the noise" if diff.get("significant_holm") else ""
                cells.append(f"{_fmt(diff, signed=True)} (p={float(diff.get('p_value', float('nan'))):.3f}; "
                             f"Holm p={float(diff.get('p_holm', float('nan'))):.3f}){verdict}")
            else:
                cells.append("")
        shown = {role: _entry(entry.get(role)) for role in roles if _entry(entry.get(role))}
        cells.append(_interval_svg(shown) if shown else "")
        rows.append(cells)
    boot = data.get("bootstrap") or {}
    note = (f'<p class="muted">values with their {boot.get("confidence", 0.95):.0%} percentile bootstrap interval '
            f'({esc(boot.get("resamples", "?"))} resamples, seed {esc(boot.get("seed", "?"))}); reference: '
            f'<b>{esc(reference)}</b>; each difference is a paired bootstrap on the same resampled rows for every '
            f'model; p-value: {esc(boot.get("p_value", ""))}; correction: {esc(boot.get("correction", ""))}.</p>')
    return section(f"Metrics: {len(roles)} models", note + table(headers, rows, table_id="metrics-table",
                                                                 raw_html_columns=[len(headers) - 1]), "metrics")


def _breakdown_section(data: dict, roles: list[str]) -> str:
    """Every metric per group (--by), with intervals; small groups flagged."""
    info = data.get("breakdown")
    if not isinstance(info, dict) or not info.get("groups"):
        return ""
    reference = data.get("reference")
    others = [role for role in roles if role != reference] if reference else []
    headers = ["group", "rows", "metric"] + [f"{role}" for role in roles]
    two = not reference and len(roles) == 2
    if two:
        headers += ["difference (tuned - base)", "p-value"]
    headers += [f"{role} - {reference} (p; Holm p)" for role in others]
    rows = []
    for group in info["groups"]:
        small = group.get("rows", 0) < info.get("min_rows", 0)
        for sub, entry in (group.get("metrics") or {}).items():
            cells: list[Any] = [group.get("value", ""), f"{group.get('rows', '')}" + (" (few)" if small else ""), sub]
            cells += [_fmt(_entry(entry.get(role))) for role in roles]
            if two:
                diff = entry.get("difference") or {}
                cells += [_fmt(diff, signed=True) if diff else "",
                          f"{float(diff['p_value']):.3f}" if "p_value" in diff else ""]
            for role in others:
                diff = (entry.get("comparisons") or {}).get(role) or {}
                cells.append(f"{_fmt(diff, signed=True)} (p={float(diff.get('p_value', float('nan'))):.3f}; Holm "
                             f"p={float(diff.get('p_holm', float('nan'))):.3f})" if diff else "")
            rows.append(cells)
    note = (f'<p class="muted">by {esc(info.get("by", ""))} ({esc(info.get("source", ""))}); each group scored '
            f'like the whole set, its intervals from its own resamples; groups under {esc(info.get("min_rows", ""))} '
            f'rows are marked (few): their intervals are wide.</p>')
    return section(f"Breakdown by {info.get('by', '')}", note + table(headers, rows, table_id="breakdown-table",
                                                                       filterable=True), "breakdown")


def _settings_section(data: dict) -> str:
    info = data.get("metric_info") or {}
    if not info:
        return ""
    rows = []
    for name, values in info.items():
        for key, value in (values or {}).items():
            rows.append([name, key, value if not isinstance(value, dict) else
                         ", ".join(f"{k}={v}" for k, v in value.items())])
    return section("Metric definitions and settings", table(["metric", "setting", "value"], rows, table_id="settings-table",
                                                            sortable=False), "settings")


def _confusion(summary: dict) -> str:
    labels, columns = summary.get("labels") or [], summary.get("columns") or []
    matrix = summary.get("confusion") or []
    top = max((v for row in matrix for v in row), default=1) or 1
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>"
    body = []
    for label, row in zip(labels, matrix):
        cells = []
        for column, value in zip(columns, row):
            good = column == label
            alpha = 0.12 + 0.6 * value / top if value else 0
            color = f"rgba(46,160,67,{alpha:.2f})" if good else f"rgba(207,34,46,{alpha:.2f})"
            cells.append(f'<td class="num" style="background:{color}">{int(value)}</td>')
        body.append(f"<tr><th>{esc(label)}</th>{''.join(cells)}</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _classification_section(data: dict, roles: list[str]) -> str:
    info = data.get("classification")
    if not isinstance(info, dict):
        return ""
    parts = ['<p class="muted">Outputs are normalised (lowercase, punctuation removed, whitespace squeezed) and '
             'mapped to a label: the whole text, its first words, or the only label mentioned. Outputs that map to '
             'no label form the column (invalid) and count as wrong.</p>']
    for role in roles:
        summary = (info.get("models") or {}).get(role)
        if not summary:
            continue
        name = ((data.get("models") or {}).get(role) or {}).get("name", role)
        parts.append(f"<h3>{esc(role)}: {esc(name)}</h3>")
        per_class = summary.get("per_class") or {}
        rows = [[label, v.get("precision", 0.0), v.get("recall", 0.0), v.get("f1", 0.0), v.get("support", 0)]
                for label, v in per_class.items()]
        parts.append("<h3>per class</h3>" + table(["label", "precision", "recall", "F1", "support"], rows,
                                                  table_id=f"perclass-{role}"))
        rules = summary.get("rules") or {}
        if rules:
            parts.append('<p class="muted">mapping: ' + esc(", ".join(f"{k} {v}" for k, v in rules.items())) + "</p>")
        invalid = (info.get("invalid") or {}).get(role) or []
        if invalid:
            parts.append(f"<h3>{len(invalid)} output(s) that map to no label</h3>")
            parts.append('<div style="max-height:280px;overflow:auto">'
                         + table(["row", "output", "reason"],
                                 [[i.get("row", ""), excerpt(i.get("output", ""), 400), i.get("reason", "")]
                                  for i in invalid], table_id=f"invalid-{role}") + "</div>")
    return section("Classification: per class and unmapped outputs", "".join(parts), "classification")


def _confusion_section(data: dict, roles: list[str]) -> str:
    """The confusion matrix of each model, side by side, near the top of the page."""
    info = data.get("classification")
    if not isinstance(info, dict):
        return ""
    parts = []
    for role in roles:
        summary = (info.get("models") or {}).get(role)
        if not summary:
            continue
        name = ((data.get("models") or {}).get(role) or {}).get("name", role)
        parts.append(f'<div><h3>{esc(role)}: {esc(name)}</h3>{_confusion(summary)}</div>')
    if not parts:
        return ""
    note = ('<p class="muted">rows: true labels; columns: predicted labels, then (invalid) for outputs that map '
            'to no label (counted wrong).</p>')
    return section("Confusion matrix", note + '<div style="display:flex;gap:24px;flex-wrap:wrap">'
                   + "".join(parts) + "</div>", "confusion")


def _text_cell(text: Any, limit: int = 400) -> str:
    text = "" if text is None else str(text)
    if len(text) <= limit:
        return f'<div class="text">{esc(text)}</div>'
    return (f'<details><summary class="text">{esc(excerpt(text, limit))}</summary>'
            f'<div class="text">{esc(text)}</div></details>')


def _prompt_cell(text: Any, tail: int = 160) -> str:
    text = "" if text is None else str(text)
    if len(text) <= tail:
        return f'<div class="text">{esc(text)}</div>'
    return (f'<details><summary class="text">…{esc(text[-tail:])}</summary>'
            f'<div class="text">{esc(text)}</div></details>')


def _scores_text(scores: dict) -> str:
    return " · ".join(f"{sub} {value:.3g}" for sub, value in scores.items() if isinstance(value, (int, float)))


def _examples_section(data: dict, roles: list[str]) -> str:
    examples = data.get("examples") or []
    if not examples:
        return ""
    primary = data.get("primary")
    compared = len(roles) == 2
    headers = ["row", "prompt (end)", "reference"] + [f"{role} output" for role in roles]
    if primary:
        headers += [f"{role} {primary}" for role in roles]
    reference = data.get("reference")
    others = [role for role in roles if role != reference] if reference else []
    if compared and primary and not reference:
        headers.append(f"change ({primary})")
    if primary:
        headers += [f"{role} - {reference} ({primary})" for role in others]
    headers.append("all scores")
    raw = [1, 2] + [3 + i for i in range(len(roles))] + [len(headers) - 1]
    rows = []
    for index, item in enumerate(examples):
        outputs = item.get("outputs") or {}
        scores = item.get("scores") or {}
        cells: list[Any] = [item.get("row", index), _prompt_cell(item.get("prompt")), _text_cell(item.get("reference"))]
        for role in roles:
            out = outputs.get(role) or {}
            text = out.get("text", item.get("prediction", "")) if isinstance(out, dict) else out
            cell = _text_cell(text)
            if isinstance(out, dict) and out.get("label") is not None:
                cell += f'<div class="muted">label: {esc(out["label"])} ({esc(out.get("rule", ""))})</div>'
            if isinstance(out, dict) and out.get("stopped") == "max_new_tokens":
                cell += '<span class="pill warning">hit max-new-tokens</span>'
            cells.append(cell)
        if primary:
            for role in roles:
                value = (scores.get(role) or {}).get(primary)
                cells.append(float(value) if isinstance(value, (int, float)) else "")
        if compared and primary and not reference:
            change = (item.get("change") or {}).get(primary)
            cells.append(float(change) if isinstance(change, (int, float)) else "")
        if primary:
            for role in others:
                change = ((item.get("changes") or {}).get(role) or {}).get(primary)
                cells.append(float(change) if isinstance(change, (int, float)) else "")
        cells.append("<br>".join(f"{esc(role)}: {esc(_scores_text(scores.get(role) or {}))}" for role in roles
                                 if scores.get(role)))
        rows.append(cells)
    note = ('<p class="muted">Click a column header to sort (e.g. by the change, to find what improved and what '
            'regressed); type to filter rows. Per-example f1 is correctness and per-example bleu is sentence BLEU; '
            'their aggregates above are corpus statistics.</p>')
    style = "<style>#examples-table td{max-width:300px}#examples-table td .text{font-size:12px}</style>"
    return section("Examples", style + note + table(headers, rows, table_id="examples-table", filterable=True,
                                                    raw_html_columns=raw), "examples")


def _warnings_section(data: dict) -> str:
    items = data.get("warnings") or []
    if not items:
        return ""
    rows = [[w.get("model", ""), w.get("code", ""), w.get("message", ""),
             ", ".join(str(r) for r in (w.get("rows") or [])[:30])] for w in items]
    return section("Warnings", table(["model", "code", "message", "rows (first 30)"], rows, table_id="warnings-table"),
                   "warnings")


def _summary(data: dict, roles: list[str]) -> str:
    models = data.get("models") or {}
    items: list[tuple[str, Any]] = []
    for role in roles:
        model = models.get(role) or {}
        items.append((f"{role} model", model.get("name", role)))
    items += [("data", data.get("data", "")), ("rows", data.get("rows", "")), ("task", data.get("task", "")),
              ("template", data.get("template", ""))]
    gen = data.get("generation") or {}
    if gen:
        items.append(("max new tokens", gen.get("max_new_tokens", "")))
    lines = []
    metrics = data.get("metrics") or {}
    heads = data.get("headline") or [data.get("primary")]
    for sub in heads:
        entry = metrics.get(sub or "")
        if not isinstance(entry, dict):
            continue
        parts = [f"{role} {_fmt(_entry(entry.get(role)))}" for role in roles if _entry(entry.get(role))]
        diff = entry.get("difference")
        if isinstance(diff, dict):
            parts.append(f"difference {_fmt(diff, signed=True)}, p={diff.get('p_value', float('nan')):.3f}")
        for role, comp in (entry.get("comparisons") or {}).items():
            if isinstance(comp, dict):
                parts.append(f"{role} - {data.get('reference')} {_fmt(comp, signed=True)}, "
                             f"Holm p={comp.get('p_holm', float('nan')):.3f}")
        lines.append(f"<li><b>{esc(sub)}</b>: {esc('; '.join(parts))}</li>")
    run = (models.get("tuned") or {}).get("run")
    extra = ""
    if isinstance(run, dict):
        extra = '<p class="muted">tuned run: ' + esc(", ".join(f"{k}={v}" for k, v in run.items())) + "</p>"
    return section("Summary", cards(items) + (f"<ul>{''.join(lines)}</ul>" if lines else "") + extra, "summary")


def _skipped_section(data: dict) -> str:
    skipped = data.get("skipped_lines") or []
    if not skipped:
        return ""
    return section(f"Skipped lines ({len(skipped)}, not evaluated)",
                   table(["line", "row", "message"], [(e.get("line"), e.get("row"), e.get("message")) for e in skipped],
                         table_id="skipped-table"), "skipped")


def render(result: Any) -> str:
    """The eval report page for ``result`` (kind "eval")."""
    data = result.data if isinstance(result.data, dict) else {}
    roles = [role for role in ROLES if role in (data.get("models") or {})]
    if data.get("reference"):  # N-way: every model, in the report's order
        roles = list(data.get("models") or {})
    if not roles:  # a minimal result: find the roles in the metric cells
        found = {role for entry in (data.get("metrics") or {}).values() if isinstance(entry, dict)
                 for role in ROLES if role in entry}
        roles = [role for role in ROLES if role in found]
    # first screen: the summary, the warnings, the confusion matrices (classification), the metrics
    body = (_summary(data, roles) + _warnings_section(data) + _confusion_section(data, roles)
            + _metrics_section(data, roles) + _breakdown_section(data, roles) + _skipped_section(data) + _classification_section(data, roles)
            + _settings_section(data) + _examples_section(data, roles))
    subtitle = f"{data.get('data', '')} · {data.get('rows', '')} rows"
    if data.get("skipped_lines"):
        subtitle += f" · {len(data['skipped_lines'])} broken lines skipped"
    return page(result.title or "sftkit eval", subtitle, body)
