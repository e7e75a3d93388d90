"""Shared pieces of sftkit's HTML reports: page shell, escaping, tables, SVG charts.

Every string that came from data goes through ``esc`` (html.escape with quotes). Pages are
self-contained: inline CSS and a small inline script for sorting and filtering tables; no
external requests. Nothing here interprets data as a template.
"""
from __future__ import annotations

import base64
import hashlib
import html as _html
import itertools
from typing import Any, Iterable, Sequence

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1f2937;color:#fff;padding:14px 28px}header h1{margin:0;font-size:20px}
header .sub{color:#cbd5e1;font-size:13px}
main{padding:18px 28px;max-width:1280px}
section{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:14px 18px;margin:0 0 16px}
h2{font-size:17px;margin:0 0 10px}h3{font-size:15px;margin:12px 0 6px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #eceef1;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f5;cursor:default;white-space:nowrap}
table.sortable th{cursor:pointer}table.sortable th:after{content:" \\2195";color:#9aa3ad}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.pill{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600}
.error{background:#fde2e1;color:#a4161a}.warning{background:#fff1c2;color:#7a5200}.info{background:#dcecff;color:#0b4a8b}
.ok{background:#daf5df;color:#1b6e2f}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #e3e6ea;border-radius:8px;padding:10px 14px;min-width:120px}
.card .v{font-size:20px;font-weight:650}.card .k{color:#5b6673;font-size:12px}
pre,.text{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;margin:0}
.tok{border-radius:3px;padding:0 1px;margin:0 1px 0 0;border:1px solid #d0d7de}
.tok.t{background:#c8f0cf;border-color:#7cc48a}.tok.m{background:#eceef1;color:#8a939d}
.tok.w{background:#fff1c2;border-color:#e0c060}
.muted{color:#5b6673}input.filter{padding:4px 8px;margin:0 0 8px;width:280px;border:1px solid #cdd3da;border-radius:6px}
svg text{font:11px system-ui,sans-serif;fill:#39424c}
"""

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      var body = table.tBodies[0]; var rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute('data-dir') !== 'asc'; th.setAttribute('data-dir', asc ? 'asc' : 'desc');
      rows.sort(function(a, b){
        var x = a.cells[col].getAttribute('data-v') || a.cells[col].textContent;
        var y = b.cells[col].getAttribute('data-v') || b.cells[col].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? c : -c;
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
document.querySelectorAll('input.filter').forEach(function(input){
  input.addEventListener('input', function(){
    var table = document.getElementById(input.getAttribute('data-table')); var q = input.value.toLowerCase();
    Array.prototype.forEach.call(table.tBodies[0].rows, function(r){
      r.style.display = r.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
    });
  });
});
"""


_TABLE_IDS = itertools.count(1)
# The CSP allows exactly this page script (by its hash), so a script or an event handler that
# slipped past escaping would still not run: defence in depth.
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")


def esc(value: Any) -> str:
    """Escape any value for HTML text or attribute context."""
    return _html.escape("" if value is None else str(value), quote=True)


def excerpt(text: Any, limit: int = 300) -> str:
    """The first ``limit`` characters of a string (unescaped; escape when emitting)."""
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[:limit] + "…"


def page(title: str, subtitle: str, body: str) -> str:
    """A whole self-contained HTML page. ``body`` must already be escaped HTML."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        f"script-src '{SCRIPT_HASH}'; img-src data:\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><div class=\"sub\">{esc(subtitle)}</div></header>"
        f"<main>{body}</main><script>{SCRIPT}</script></body></html>\n"
    )


def section(title: str, inner: str, anchor: str = "") -> str:
    """A titled card. ``inner`` must already be escaped HTML."""
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{ident}><h2>{esc(title)}</h2>{inner}</section>"


def cards(items: Iterable[tuple[str, Any]]) -> str:
    """A row of headline figures."""
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>' for k, v in items
    ) + "</div>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, table_id: str = "", sortable: bool = True,
          filterable: bool = False, raw_html_columns: Sequence[int] = ()) -> str:
    """An HTML table. Cells are escaped unless their column index is in ``raw_html_columns``
    (for cells the caller built from escaped pieces). Numeric cells sort numerically."""
    ident = table_id or f"t{next(_TABLE_IDS)}"  # unique: a filter box finds its table by id
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            if index in raw_html_columns:
                cells.append(f"<td>{cell}</td>")
            elif isinstance(cell, (int, float)) and not isinstance(cell, bool):
                shown = f"{cell:.4g}" if isinstance(cell, float) else str(cell)
                cells.append(f'<td class="num" data-v="{esc(cell)}">{esc(shown)}</td>')
            else:
                cells.append(f"<td>{esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    filt = f'<input class="filter" placeholder="filter rows" data-table="{esc(ident)}">' if filterable else ""
    cls = ' class="sortable"' if sortable else ""
    return f'{filt}<table id="{esc(ident)}"{cls}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def bar_chart(items: Sequence[tuple[str, float]], *, width: int = 560, bar_height: int = 18, color: str = "#4c78a8") -> str:
    """Horizontal bars (label, value) as inline SVG."""
    if not items:
        return '<p class="muted">no data</p>'
    top = max(v for _, v in items) or 1
    label_w = 170
    height = bar_height * len(items) + 6
    parts = [f'<svg width="{width}" height="{height}" role="img">']
    for i, (label, value) in enumerate(items):
        y = i * bar_height + 3
        w = (width - label_w - 60) * (value / top)
        parts.append(f'<text x="0" y="{y + bar_height - 6}">{esc(excerpt(label, 26))}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_height - 4}" fill="{color}"></rect>')
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + bar_height - 6}">{esc(_fmt(value))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(values: Sequence[float], *, bins: int = 30, marker: float | None = None, marker_label: str = "",
              width: int = 620, height: int = 180, color: str = "#4c78a8") -> str:
    """A histogram of values as inline SVG, with an optional vertical marker line."""
    if not values:
        return '<p class="muted">no data</p>'
    lo, hi = min(values), max(values)
    if marker is not None:
        hi = max(hi, marker)
    span = (hi - lo) or 1
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / span * bins))] += 1
    top = max(counts) or 1
    pad_l, pad_b = 40, 20
    plot_w, plot_h = width - pad_l - 10, height - pad_b - 10
    bw = plot_w / bins
    parts = [f'<svg width="{width}" height="{height}" role="img">']
    for i, c in enumerate(counts):
        h = plot_h * c / top
        parts.append(f'<rect x="{pad_l + i * bw:.1f}" y="{10 + plot_h - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                     f'height="{h:.1f}" fill="{color}"><title>{c}</title></rect>')
    parts.append(f'<text x="{pad_l}" y="{height - 4}">{esc(_fmt(lo))}</text>')
    parts.append(f'<text x="{width - 60}" y="{height - 4}">{esc(_fmt(hi))}</text>')
    parts.append(f'<text x="0" y="18">{top}</text>')
    if marker is not None:
        x = pad_l + plot_w * (marker - lo) / span
        parts.append(f'<line x1="{x:.1f}" y1="6" x2="{x:.1f}" y2="{10 + plot_h}" stroke="#c0392b" stroke-width="2" '
                     f'stroke-dasharray="4 3"></line>')
        parts.append(f'<text x="{max(x - 90, pad_l):.1f}" y="12" style="fill:#c0392b">{esc(marker_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(series: dict[str, Sequence[tuple[float, float]]], *, width: int = 620, height: int = 220,
               x_label: str = "step") -> str:
    """Lines (name -> [(x, y), ...]) as inline SVG with a legend."""
    points = [p for values in series.values() for p in values]
    if not points:
        return '<p class="muted">no data</p>'
    colors = ["#4c78a8", "#e45756", "#54a24b", "#f58518", "#b279a2"]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    xs_span, ys_span = (x1 - x0) or 1, (y1 - y0) or 1
    pad_l, pad_b, pad_t = 48, 22, 20
    pw, ph = width - pad_l - 12, height - pad_b - pad_t
    parts = [f'<svg width="{width}" height="{height}" role="img">']
    for i, (name, values) in enumerate(series.items()):
        color = colors[i % len(colors)]
        coords = " ".join(f"{pad_l + pw * (x - x0) / xs_span:.1f},{pad_t + ph - ph * (y - y0) / ys_span:.1f}" for x, y in values)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{coords}"></polyline>')
        parts.append(f'<text x="{pad_l + 10 + i * 120}" y="12" style="fill:{color}">{esc(name)}</text>')
    parts.append(f'<text x="0" y="{pad_t + 8}">{esc(_fmt(y1))}</text><text x="0" y="{pad_t + ph}">{esc(_fmt(y0))}</text>')
    parts.append(f'<text x="{pad_l}" y="{height - 4}">{esc(x_label)} {esc(_fmt(x0))}</text>')
    parts.append(f'<text x="{width - 60}" y="{height - 4}">{esc(_fmt(x1))}</text></svg>')
    return "".join(parts)


def token_view(tokens: Sequence[tuple[str, float]]) -> str:
    """Tokens as boxes: trained (weight 1) green, masked (0) grey, partial weight yellow."""
    out = []
    for text, weight in tokens:
        cls = "t" if weight >= 1 else ("m" if weight <= 0 else "w")
        shown = text.replace("\n", "\\n\n") if text else "∅"
        out.append(f'<span class="tok {cls}" title="weight {weight:g}">{esc(shown)}</span>')
    return '<div class="text">' + "".join(out) + "</div>"


def _fmt(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}"
    return f"{int(value):,}" if abs(value) < 1e15 else f"{value:.3g}"
