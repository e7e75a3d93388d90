"""Breakdowns (``sftkit eval --by COLUMN``): every metric per group of rows, with its interval.

The groups come from the spec's ``task`` field (the default when it holds more than one value,
e.g. after multi-task mixing), the label (the default for classification), or any column of the
source rows. Each group is scored exactly as the whole set is (``sftkit.eval.scoring.score``
on its rows: intervals, and the paired differences of the models on the group's own
resamples); a group with fewer than ``MIN_GROUP_ROWS`` rows is warned about.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from sftkit.errors import UsageError

MIN_GROUP_ROWS = 10
NONE_VALUE = "(none)"
OFF = "none"


def group_values(by: str | None, request: Any, examples: list, classification: bool) -> tuple[str, str, list[str]] | None:
    """``(column, where it comes from, one group value per example)``, or None for no breakdown.

    ``by`` None: the spec's task when it has more than one value, else the label for
    classification, else none; ``--by none``: none; ``task`` and ``label``: the spec's fields;
    any other name: a column of the source rows (a UsageError when no row has it)."""
    if by == OFF:
        return None
    tasks = [example.meta.get("category") for example in examples]
    if by is None:
        if len({t for t in tasks if t is not None}) > 1:
            return "task", "the spec's task field", [_shown(t) for t in tasks]
        if classification:
            return "label", "the reference label", [_shown(e.label) for e in examples]
        return None
    if by == "task" and any(t is not None for t in tasks):
        return "task", "the spec's task field", [_shown(t) for t in tasks]
    if by == "label" and classification:
        return "label", "the reference label", [_shown(e.label) for e in examples]
    return by, "a column of the data", _column(by, request, examples)


def _shown(value: Any) -> str:
    if value is None or value == "":
        return NONE_VALUE
    return value if isinstance(value, str) else str(value)


def _column(name: str, request: Any, examples: list) -> list[str]:
    """The value of source column ``name`` for each example (rows read again from the file)."""
    from itertools import islice

    from sftkit.pipeline import load_records

    last = max(example.row for example in examples)
    records = list(islice(load_records(replace(request, skip_invalid=True)), last + 1))
    found = [records[e.row].get(name) if e.row < len(records) and isinstance(records[e.row], dict) else None
             for e in examples]
    if all(value is None for value in found):
        columns = sorted({key for record in records[:50] if isinstance(record, dict) for key in record})
        raise UsageError(f"--by {name}: no evaluated row has a column {name!r}",
                         hint=f"columns: {', '.join(columns) or 'none'}; or --by task, --by label, --by none")
    return [_shown(value) for value in found]


def breakdown(column: str, source: str, values: list[str], metrics: list, runs: dict, references: list[str],
              classification: bool, *, resamples: int, seed: int, confidence: float,
              reference: str | None) -> tuple[dict, list[dict]]:
    """The per-group tables (groups in order of first appearance) and the small-group warnings."""
    from sftkit.eval.scoring import score

    groups: dict[str, list[int]] = {}
    for index, value in enumerate(values):
        groups.setdefault(value, []).append(index)
    out = []
    for value, rows in groups.items():
        subset = {role: _subset(run, rows) for role, run in runs.items()}
        table, _notes = score(metrics, subset, [references[i] for i in rows], classification, resamples=resamples,
                              seed=seed, confidence=confidence, reference=reference)
        out.append({"value": value, "rows": len(rows), "metrics": table})
    small = [g for g in out if g["rows"] < MIN_GROUP_ROWS]
    warnings = []
    if small:
        shown = ", ".join(f"{g['value']!r} ({g['rows']})" for g in small[:10]) + (" ..." if len(small) > 10 else "")
        warnings.append({"model": "", "code": "small_groups", "rows": [],
                         "message": f"--by {column}: {len(small)} group(s) have fewer than {MIN_GROUP_ROWS} rows, "
                                    f"too few for their intervals to mean much: {shown}"})
    return {"by": column, "source": source, "min_rows": MIN_GROUP_ROWS, "groups": out}, warnings


def _subset(run: Any, rows: list[int]) -> Any:
    """The run restricted to ``rows`` (scores recomputed on them)."""
    return replace(run, texts=[run.texts[i] for i in rows], generations=[run.generations[i] for i in rows],
                   labels=[run.labels[i] for i in rows] if run.labels is not None else None, scores={})
