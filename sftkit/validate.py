"""``sftkit validate``: the pre-flight check of a dataset, with Rich, HTML and JSON reports.

Exit 0 when no issue reaches ``--fail-on`` (default error), 1 when one does, 2 when the input
cannot be read or an option is wrong. The engine is ``sftkit.validation.run_validation``.
"""
from __future__ import annotations


import click

from sftkit.cli import (data_options, parse_component_options, parse_key_values, parse_names, render_options,
                        reporter_flags)
from sftkit.errors import UsageError

TOP_ISSUES = 12
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def parse_severities(items: tuple[str, ...]) -> dict[str, str]:
    """``("conflicting_labels=warning",)`` -> ``{"conflicting_labels": "warning"}``, levels checked."""
    from sftkit.spec import SEVERITY_LEVELS

    levels = parse_key_values(items, "--severity")
    for code, level in levels.items():
        if level not in SEVERITY_LEVELS:
            raise UsageError(f"--severity {code}={level}: the level must be one of {', '.join(SEVERITY_LEVELS)}")
    return levels


@click.command("validate")
@click.argument("data", type=click.Path(dir_okay=True))
@data_options
@render_options
@click.option("--no-tokenizer", is_flag=True,
              help="Skip the checks that need a tokenizer (the tokenization validator).")
@click.option("--eval-data", metavar="PATH", type=click.Path(dir_okay=True),
              help="Eval data to check for train/eval leakage (read with the same spec and columns).")
@click.option("--report-dir", metavar="DIR", type=click.Path(file_okay=False), default="reports", show_default=True,
              help="Where the reports go (validate.html and validate.json from the built-in reporters).")
@reporter_flags
@click.option("--json", "json_path", metavar="PATH", type=click.Path(dir_okay=False),
              help="Also write the JSON report to PATH.")
@click.option("--fail-on", type=click.Choice(["error", "warning"]), default="error", show_default=True,
              help="Exit 1 when an issue of this severity or worse is found.")
@click.option("--only", multiple=True, metavar="NAMES", help="Run only these validators (comma-separated, repeatable).")
@click.option("--skip", multiple=True, metavar="NAMES", help="Skip these validators (comma-separated, repeatable).")
@click.option("--severity", "severities", multiple=True, metavar="CODE=LEVEL",
              help="Change an issue code's severity to error, warning, info or off (repeatable; a spec's severity: "
                   "map does the same, the flag wins; the report keeps the default as details.default_severity).")
@click.option("--validator-option", "validator_options", multiple=True, metavar="NAME.KEY=VALUE",
              help="A validator threshold, e.g. balance.max_ratio=5 (repeatable; a spec's validators: sets them too, "
                   "the flag wins).")
@click.option("--batch-size", metavar="N", type=click.IntRange(min=1, max=2**20), default=8, show_default=True,
              help="Batch size for the padding-waste figure.")
@click.pass_context
def command(ctx, data, request, render, no_tokenizer, eval_data, report_dir, reporters, no_reporters, json_path,
            fail_on, only, skip, severities, validator_options, batch_size):
    """Check a dataset before training: schema, quality, consistency, balance, tokenization, leakage.

    Prints a summary per validator and the top issues, writes an HTML and a JSON report, and
    exits 1 when an issue at or above --fail-on is found (0 otherwise, 2 on unreadable input).
    The token checks use --max-length (default 1024, TRL's default).
    """
    import dataclasses

    from sftkit.console import err_console, plain, print_skipped
    from sftkit.io import check_writable_dir, check_writable_file, protect_inputs
    from sftkit.pipeline import DEFAULT_MAX_LENGTH, prepare
    from sftkit.registry import get_registry
    from sftkit.reporting import choose_reporters, write_reports
    from sftkit.validation import ValidationSettings, check_validation, failed, run_validation

    protect_inputs([data, eval_data, request.spec])
    check_writable_dir(report_dir, "--report-dir")
    if json_path:
        check_writable_file(json_path, "--json")
    chosen = choose_reporters(get_registry(), parse_names(reporters), parse_names(no_reporters))
    settings = ValidationSettings(only=tuple(parse_names(only)), skip=tuple(parse_names(skip)),
                                  validator_options=parse_component_options(validator_options, "--validator-option",
                                                                                      "quality"),
                                  severity=parse_severities(severities), batch_size=batch_size)
    render = dataclasses.replace(render, model=None if no_tokenizer else render.model,
                                 max_length=render.max_length or DEFAULT_MAX_LENGTH)
    prepared = prepare(request.for_path(data), render, checks=[lambda spec: check_validation(spec, settings)],
                       light_tokenizer=True)  # validate only tokenizes: no torch where the ids stay the same
    evals = prepared.more(request.for_path(eval_data)) if eval_data else None
    result = run_validation(prepared, settings, eval_data=evals)
    written = write_reports(result, report_dir, prepared.registry, json_copy=json_path, reporters=chosen)
    print_summary(result)
    print_skipped([error["message"] for error in result.data["dataset"]["skipped_lines"]])
    if written:
        err_console.print(plain("report: " + ", ".join(str(p) for p in written), "bold"))
    if failed(result, fail_on):
        ctx.exit(1)


def print_summary(result) -> None:
    """The Rich summary: a table per validator and the top issues with rows and excerpts."""
    from rich.table import Table
    from rich.text import Text

    from sftkit.console import console, excerpt, plain

    data = result.data
    dataset, summary = data["dataset"], data["summary"]
    console.print(plain(f"{dataset['path']}: {summary['rows']} rows; {dataset['note']}; template "
                        f"{dataset['template']}, masking {dataset['masking']}, max length {dataset['max_length']}",
                        "dim"))
    table = Table(title="sftkit validate", title_justify="left")
    for header in ("validator", "errors", "warnings", "infos", "seconds"):
        table.add_column(header, justify="left" if header == "validator" else "right")
    for name in dataset["validators"]:
        mine = [i for i in data["issues"] if i["validator"] == name]
        counts = [sum(1 for i in mine if i["severity"] == s) for s in ("error", "warning", "info")]
        table.add_row(plain(name), *(Text(str(c), style=SEVERITY_STYLE[s] if c else "dim")
                                     for c, s in zip(counts, ("error", "warning", "info"))),
                      plain(f"{data['timings'].get(name, 0):.1f}", "dim"))
    console.print(table)
    examples = data["examples"]
    for issue in data["issues"][:TOP_ISSUES]:
        rows = issue["rows"]
        line = Text()
        line.append(f"{issue['severity']:<7} ", style=SEVERITY_STYLE[issue["severity"]])
        line.append(plain(f"{issue['validator']}.{issue['code']}", "bold"))
        line.append(" ")
        line.append(plain(issue["message"]))
        console.print(line)
        if rows:
            shown = ", ".join(map(str, rows[:8])) + (f", … ({len(rows)} rows)" if len(rows) > 8 else "")
            console.print(plain(f"        rows {shown}", "dim"))
            first = examples.get(str(rows[0]))
            if first:
                text = first.get("input", first["prompt"]) + " → " + first["response"]
                console.print(plain(f"        row {rows[0]}: {excerpt(text, 100)}"))
    if len(data["issues"]) > TOP_ISSUES:
        console.print(plain(f"… and {len(data['issues']) - TOP_ISSUES} more issues in the report", "dim"))
    verdict = (f"{summary['errors']} errors, {summary['warnings']} warnings, {summary['infos']} infos "
               f"in {summary['rows']} rows")
    console.print(plain(verdict, "bold red" if summary["errors"] else ("yellow" if summary["warnings"] else "green")))
