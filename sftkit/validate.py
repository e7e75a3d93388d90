"""``sftkit validate``: the pre-flight check of a dataset, with Rich, HTML and JSON reports.

Exit 0 when no issue reaches ``--fail-on`` (default error), 1 when one does, 2 when the input
cannot be read or an option is wrong. The engine is ``sftkit.validation.run_validation``.
"""
from __future__ import annotations

from pathlib import Path

import click

from sftkit.cli import data_options, parse_key_values, render_options
from sftkit.errors import UsageError

TOP_ISSUES = 12
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def parse_names(values: tuple[str, ...]) -> list[str]:
    """``("a,b", "c")`` -> ``["a", "b", "c"]``."""
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def parse_severities(items: tuple[str, ...]) -> dict[str, str]:
    """``("conflicting_labels=warning",)`` -> ``{"conflicting_labels": "warning"}``, levels checked."""
    from sftkit.spec import SEVERITY_LEVELS

    levels = parse_key_values(items, "--severity")
    for code, level in levels.items():
        if level not in SEVERITY_LEVELS:
            raise UsageError(f"--severity {code}={level}: the level must be one of {', '.join(SEVERITY_LEVELS)}")
    return levels


def parse_validator_options(items: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``("quality.near_dup_threshold=0.7",)`` -> ``{"quality": {"near_dup_threshold": "0.7"}}``."""
    out: dict[str, dict[str, str]] = {}
    for key, value in parse_key_values(items, "--validator-option").items():
        if "." not in key:
            raise UsageError(f"--validator-option {key}={value}: name the validator, e.g. quality.{key}={value}")
        name, option = key.split(".", 1)
        out.setdefault(name.strip(), {})[option.strip()] = value
    return out


@click.command("validate")
@click.argument("data", type=click.Path(dir_okay=True))
@data_options
@render_options
@click.option("--no-tokenizer", is_flag=True, help="Skip the checks that need a tokenizer (tokenization).")
@click.option("--eval-data", type=click.Path(dir_okay=True), help="Eval data to check for train/eval leakage.")
@click.option("--report-dir", type=click.Path(file_okay=False), default="reports", show_default=True,
              help="Folder for validate.html and validate.json.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the JSON report here.")
@click.option("--fail-on", type=click.Choice(["error", "warning"]), default="error", show_default=True,
              help="Exit 1 when an issue of this severity (or worse) is found.")
@click.option("--only", multiple=True, metavar="NAMES", help="Run only these validators (comma-separated).")
@click.option("--skip", multiple=True, metavar="NAMES", help="Skip these validators (comma-separated).")
@click.option("--severity", "severities", multiple=True, metavar="CODE=LEVEL",
              help="Change an issue code's severity: error, warning, info or off (repeatable; also spec key 'severity').")
@click.option("--validator-option", "validator_options", multiple=True, metavar="NAME.KEY=VALUE",
              help="A validator threshold, e.g. quality.near_dup_threshold=0.7 (repeatable).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Batch size for the padding-waste figure.")
@click.pass_context
def command(ctx, data, spec, columns, instruction, loader, loader_options, skip_invalid, template, template_options,
            masking, masking_options, model, max_length, add_special_tokens, trust_remote_code, no_tokenizer,
            eval_data, report_dir, json_path, fail_on, only, skip, severities, validator_options, batch_size):
    """Check a dataset before training: schema, quality, consistency, balance, tokenization, leakage.

    Prints a summary per validator and the top issues, writes an HTML and a JSON report, and
    exits 1 when an issue at or above --fail-on is found (0 otherwise, 2 on unreadable input).
    """
    from sftkit.console import err_console, plain, print_skipped
    from sftkit.io import atomic_write_json, check_not_input, protect_inputs
    from sftkit.registry import get_registry
    from sftkit.reporting import write_reports
    from sftkit.validation import failed, run_validation

    protect_inputs([data, eval_data, spec])
    if json_path:
        check_not_input(json_path, "--json")
    registry = get_registry()
    result = run_validation(
        data, spec=spec, columns=columns, instruction=instruction, loader=loader,
        loader_options=parse_key_values(loader_options, "--loader-option"), template=template,
        template_options=parse_key_values(template_options, "--template-option"), masking=masking,
        masking_options=parse_key_values(masking_options, "--masking-option"),
        model=None if no_tokenizer else model, trust_remote_code=trust_remote_code, max_length=max_length,
        add_special_tokens=add_special_tokens, eval_data=eval_data, only=parse_names(only), skip=parse_names(skip),
        validator_options=parse_validator_options(validator_options), batch_size=batch_size,
        skip_invalid=skip_invalid, severity=parse_severities(severities), registry=registry,
    )
    written = write_reports(result, report_dir, registry)
    if json_path:
        written.append(atomic_write_json(json_path, result.data))
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
