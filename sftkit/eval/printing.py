"""The terminal side of ``sftkit eval``: the Rich table of every metric with its interval (and the
difference with its p-value), metric settings, unmappable outputs, warnings, the headline."""
from __future__ import annotations

ROLES = ("base", "tuned")


def _fmt(entry: dict | None) -> str:
    if not entry:
        return ""
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def print_summary(result: dict) -> None:
    """The Rich table of metrics with intervals (base, tuned, difference), warnings, the headline."""
    from rich import box
    from rich.table import Table

    from sftkit.console import console, plain

    if result.get("reference"):
        console.print(several_table(result))
        _print_notes(result)
        return
    roles = [role for role in ROLES if role in result["models"]]
    conf = int(round(result["bootstrap"]["confidence"] * 100))
    names = ", ".join(f"{role} = {result['models'][role]['name']}" for role in roles)
    table = Table(title=plain(f"sftkit eval: {result['data']} ({result['rows']} rows, {result['task']})"),
                  caption=plain(f"{names}; value [{conf}% bootstrap CI]"), title_justify="left",
                  caption_justify="left", box=box.SIMPLE_HEAD, show_lines=True)
    table.add_column("metric")
    for role in roles:
        table.add_column(role if len(roles) > 1 else "value", justify="right")
    if len(roles) > 1:
        table.add_column("tuned - base", justify="right")
        table.add_column("p", justify="right")
    for sub, entry in result["metrics"].items():
        cells = [plain(sub)]
        for role in roles:  # the value, its interval on the line below
            e = entry.get(role)
            cells.append(plain(f"{e['value']:.3f}\n[{e['low']:.3f}, {e['high']:.3f}]" if e else ""))
        if "difference" in entry:
            diff = entry["difference"]
            style = ("green" if diff["low"] > 0 else "red") if diff["significant"] else ""
            cells += [plain(f"{diff['value']:+.3f}\n[{diff['low']:+.3f}, {diff['high']:+.3f}]", style),
                      plain(f"{diff['p_value']:.3f}")]
        table.add_row(*cells)
    console.print(table)
    _print_notes(result)


def breakdown_table(result: dict) -> object:
    """Every metric per group (``--by``): one row per group and sub-metric, one column per model."""
    from rich import box
    from rich.table import Table

    from sftkit.console import plain

    info = result["breakdown"]
    roles = list(result["models"]) if result.get("reference") else [r for r in ROLES if r in result["models"]]
    table = Table(title=plain(f"by {info['by']} ({info['source']}): {len(info['groups'])} groups"),
                  title_justify="left", box=box.SIMPLE_HEAD)
    for header in ("group", "rows", "metric"):
        table.add_column(header, justify="right" if header == "rows" else "left")
    for role in roles:
        table.add_column(role if len(roles) > 1 else "value", justify="right")
    for group in info["groups"]:
        for index, (sub, entry) in enumerate(group["metrics"].items()):
            small = group["rows"] < info["min_rows"]
            cells = [plain(group["value"] if index == 0 else ""),
                     plain((str(group["rows"]) + (" (few)" if small else "")) if index == 0 else "",
                           "yellow" if small else ""), plain(sub)]
            cells += [plain(_fmt(entry.get(role))) for role in roles]
            table.add_row(*cells)
    return table


def _print_notes(result: dict) -> None:
    """The breakdown, metric settings, unmappable outputs, warnings and the headline, below the table."""
    from sftkit.console import console, err_console, excerpt, plain

    if result.get("breakdown"):
        console.print(breakdown_table(result))
    for name, info in result["metric_info"].items():
        detail = "; ".join(f"{k}: {v}" for k, v in info.items() if k not in ("options", "definition"))
        if detail:
            console.print(plain(f"  {name}: {detail}", "dim"))
    for role, items in (result.get("classification") or {}).get("invalid", {}).items():
        if items:
            err_console.print(plain(f"{role}: {len(items)} output(s) map to no label (counted wrong):", "yellow"))
            for item in items[:5]:
                err_console.print(plain(f"  row {item['row']}: {excerpt(item['output'], 70)} ({item['reason']})", "dim"))
            if len(items) > 5:
                err_console.print(plain(f"  ... {len(items) - 5} more in the reports", "dim"))
    for warning in result["warnings"]:
        err_console.print(plain(f"warning: {warning['message']}", "yellow"))
    for line in headline(result):
        console.print(plain(line, "bold"))


def several_table(result: dict) -> object:
    """The N-way table: one column per model, then each model minus the reference with its Holm p."""
    from rich import box
    from rich.table import Table

    from sftkit.console import plain

    roles, reference = list(result["models"]), result["reference"]
    others = [role for role in roles if role != reference]
    conf = int(round(result["bootstrap"]["confidence"] * 100))
    names = ", ".join(f"{role} = {result['models'][role]['name']}" for role in roles)
    table = Table(title=plain(f"sftkit eval: {result['data']} ({result['rows']} rows, {result['task']})"),
                  caption=plain(f"{names}; value [{conf}% bootstrap CI]; difference vs {reference} (paired, the same "
                                f"resamples), p and Holm-adjusted p over {len(others)} comparison(s)"),
                  title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, show_lines=True)
    table.add_column("metric")
    for role in roles:
        table.add_column(role + (" (ref)" if role == reference else ""), justify="right")
    for role in others:
        table.add_column(f"{role} - {reference}", justify="right")
    for sub, entry in result["metrics"].items():
        cells = [plain(sub)]
        for role in roles:
            e = entry.get(role)
            cells.append(plain(f"{e['value']:.3f}\n[{e['low']:.3f}, {e['high']:.3f}]" if e else ""))
        for role in others:
            diff = (entry.get("comparisons") or {}).get(role)
            if not diff:
                cells.append(plain(""))
                continue
            style = ("green" if diff["low"] > 0 else "red") if diff["significant_holm"] else ""
            cells.append(plain(f"{diff['value']:+.3f}\n[{diff['low']:+.3f}, {diff['high']:+.3f}]\n"
                               f"p={diff['p_value']:.3f} holm={diff['p_holm']:.3f}", style))
        table.add_row(*cells)
    return table


def headline(result: dict) -> list[str]:
    """One line per headline metric: base -> tuned with intervals and the difference (N-way: each
    model against the reference)."""
    lines = []
    if result.get("reference"):
        reference = result["reference"]
        for sub in result.get("headline") or [result.get("primary")]:
            entry = result["metrics"].get(sub or "")
            if not entry:
                continue
            parts = [f"{reference} {_fmt(entry[reference])}"]
            for role, diff in (entry.get("comparisons") or {}).items():
                verdict = "Holm: outside the noise" if diff["significant_holm"] else "Holm: within the noise"
                parts.append(f"{role} {_fmt(entry[role])}, {diff['value']:+.3f} p={diff['p_value']:.3f} "
                             f"holm={diff['p_holm']:.3f} ({verdict})")
            lines.append(f"{sub}: " + "; ".join(parts))
        return lines
    for sub in result.get("headline") or [result.get("primary")]:
        entry = result["metrics"].get(sub or "")
        if not entry:
            continue
        if "base" in entry and "tuned" in entry:
            diff = entry["difference"]
            verdict = ("better, outside the CI" if diff["low"] > 0 else
                       "worse, outside the CI" if diff["high"] < 0 else "within the noise")
            lines.append(f"{sub}: base {_fmt(entry['base'])} -> tuned {_fmt(entry['tuned'])}; "
                         f"difference {diff['value']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}], "
                         f"p={diff['p_value']:.3f} ({verdict})")
        else:
            role = "tuned" if "tuned" in entry else "base"
            lines.append(f"{sub}: {_fmt(entry[role])}")
    return lines
