"""The ``schema`` validator: required fields present, of the right type, not empty.

A pandera schema is built from the spec (required fields, types, ``constraints``) and run
lazily on each chunk of mapped records, so every failure is collected, not just the first.
Turn-level problems of conversations come from the mapping (``Example.meta["problems"]``).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterator

from sftkit import Issue, UsageError
from sftkit.plugins.validators.text import rows as count_rows

CONSTRAINTS = ("min_length",)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_label(value: Any) -> bool:
    return isinstance(value, (str, int, bool)) and not isinstance(value, float)


def _is_category(value: Any) -> bool:
    return isinstance(value, (str, int))


def build_schema(spec: Any):
    """The pandera DataFrameSchema for a spec's canonical fields (columns of object dtype)."""
    import pandera.pandas as pa

    for name, rules in spec.constraints.items():
        unknown = [k for k in (rules or {}) if k not in CONSTRAINTS]
        if unknown:
            raise UsageError(f"spec {spec.name}: unknown constraint(s) {unknown} for {name!r}",
                             hint="supported constraints: " + ", ".join(CONSTRAINTS))
    fields = list(spec.columns)
    if spec.instruction is not None and "instruction" not in fields:
        fields.append("instruction")
    required = set(spec.required_fields)
    columns = {}
    for name in fields:
        if name == "messages":
            typecheck = lambda v: isinstance(v, list)  # noqa: E731
        elif name == "task":
            typecheck = _is_category
        elif name in ("output", "label") and spec.task == "classification":
            typecheck = _is_label
        else:
            typecheck = _is_text
        # Vectorised checks (one Series.map each): pandera's element-wise checks cost ~10x more.
        checks = [pa.Check(lambda s, f=typecheck: s.map(f), ignore_na=True, name="wrong_type")]
        min_length = (spec.constraints.get(name) or {}).get("min_length")
        if min_length:
            checks.append(pa.Check(lambda s, n=int(min_length): s.map(lambda v: not isinstance(v, str)
                                                                       or len(v.strip()) >= n),
                                   ignore_na=True, name="empty_field"))
        columns[name] = pa.Column(object, nullable=name not in required, checks=checks, required=True)
    return pa.DataFrameSchema(columns, strict=False), fields


def schema(context) -> Iterator[Issue]:
    """Required fields present, of the right type and not empty (pandera, every failure collected)."""
    import pandas as pd
    import pandera.pandas as pa

    spec = context.spec
    pandera_schema, fields = build_schema(spec)
    failures: dict[tuple[str, str], list[int]] = defaultdict(list)
    for chunk in context.examples.chunks():
        index = range(chunk.start, chunk.start + len(chunk.records))
        frame = pd.DataFrame({name: pd.Series([r.get(name) for r in chunk.records], index=index, dtype=object)
                              for name in fields}, index=index)
        try:
            pandera_schema.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as exc:
            cases = exc.failure_cases
            for column, check, row in zip(cases["column"], cases["check"], cases["index"]):
                if row is None or row != row:
                    continue
                code = "missing_field" if check == "not_nullable" else str(check)
                failures[(code, str(column))].append(int(row))
        for example in chunk.examples:
            for code, name, _message in example.meta.get("problems", ()):
                if name == "messages":
                    failures[(code if code != "unknown_role" else "wrong_type", "messages")].append(example.row)
    total = context.rows
    for (code, name), rows in sorted(failures.items()):
        rows = sorted(set(rows))
        column = spec.columns.get(name, name)
        where = f"{name!r} (column {column!r})" if column != name else repr(name)
        if code == "missing_field":
            message = (f"{where} is missing or null in {len(rows)} of {total} rows"
                       + ("; no record has it: map it with --column" if len(rows) == total else ""))
        elif code == "wrong_type":
            message = (f"{where} has the wrong type in {count_rows(len(rows))}" if name != "messages"
                       else f"malformed conversation turns (not objects, unknown roles, non-text content) in "
                            f"{count_rows(len(rows))}")
        elif code == "empty_field":
            limit = (spec.constraints.get(name) or {}).get("min_length")
            message = f"{where} is empty or shorter than min_length {limit} in {count_rows(len(rows))}"
        else:
            message = f"{where} failed check {code} in {count_rows(len(rows))}"
        yield Issue("schema", code, "error", message, rows, {"field": name, "column": column})
    context.stats["schema"] = {"fields": fields, "required": sorted(spec.required_fields),
                               "constraints": spec.constraints}


schema.codes = {  # code: (severity, what it means, how to fix); the README table is generated from it
    'missing_field': (
        'error',
        'a field the spec requires (e.g. `output`) is absent or null; "no record has it" means the '
        'column mapping is wrong',
        'fill the field, or map it with `--column output=COLUMN`',
    ),
    'wrong_type': (
        'error',
        'a field holds a number, list or object where text is expected (labels may be numbers); or a '
        'conversation turn is malformed (not an object, unknown role, non-text content)',
        "convert the values to text; fix the turns' roles and content",
    ),
    'empty_field': (
        'error',
        "a field is shorter than the spec's `constraints: {field: {min_length: N}}` (whitespace does "
        'not count)',
        'fill or drop the rows, or relax the constraint',
    ),
    'non_alternating': (
        'error',
        "a conversation's turns do not alternate (system first, then user and assistant in turn)",
        'fix the order of the turns, or merge consecutive turns of one role',
    ),
}
