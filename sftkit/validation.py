"""The validation engine: load a dataset once into chunks, run each validator, collect issues.

    result = run_validation("data.jsonl", spec="alpaca", model="smollm2-135m", max_length=1024)
    if failed(result, fail_on="error"): ...

Examples are kept in chunks of ``CHUNK_ROWS``; every chunk but the one in use is held
pickled (compact bytes), so validators can walk the data several times without keeping a
million Python objects alive. Validators keep compact per-row state (hashes, lengths) and
yield ``Issue`` objects; ``context.stats[name]`` holds their figures.
"""
from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sftkit.errors import DataError, PluginError, SftkitError, UsageError
from sftkit.types import SEVERITIES, Example, Issue, Result

CHUNK_ROWS = 4096
VALIDATORS = ("schema", "quality", "consistency", "balance", "tokenization", "leakage")
DEFAULT_MAX_LENGTH = 1024  # TRL SFTConfig's default max_length, used when none is given
EXAMPLES_PER_ISSUE = 20  # flagged rows whose text goes into the report, per issue
TOKEN_VIEW_SAMPLES = 3
TOKEN_VIEW_LIMIT = 100


@dataclass
class Chunk:
    """A run of consecutive rows: examples, their mapped canonical fields, their record shapes."""

    start: int
    examples: list[Example]
    records: list[dict]  # canonical field -> raw value, as the spec mapped it (for the schema validator)
    shapes: list[str]  # one short signature per record: its keys (and its turns' keys)


class ExampleStore:
    """Examples in chunks; every chunk but the last one used is kept pickled."""

    def __init__(self, chunk_rows: int = CHUNK_ROWS):
        self.chunk_rows = chunk_rows
        self._frozen: list[bytes] = []
        self._open = Chunk(0, [], [], [])
        self._cache: tuple[int, Chunk] | None = None
        self.rows = 0

    def add(self, example: Example, record: dict, shape: str) -> None:
        """Append one row (rows must arrive in order)."""
        self._open.examples.append(example)
        self._open.records.append(record)
        self._open.shapes.append(shape)
        self.rows += 1
        if len(self._open.examples) >= self.chunk_rows:
            self._frozen.append(pickle.dumps(self._open, protocol=pickle.HIGHEST_PROTOCOL))
            self._open = Chunk(self.rows, [], [], [])

    def __len__(self) -> int:
        return self.rows

    def _chunk(self, index: int) -> Chunk:
        if index == len(self._frozen):
            return self._open
        if self._cache is None or self._cache[0] != index:
            # Safe: these bytes were pickled by this process in add(); nothing is read from disk.
            self._cache = (index, pickle.loads(self._frozen[index]))
        return self._cache[1]

    def chunks(self) -> Iterator[Chunk]:
        """Every chunk in row order."""
        for index in range(len(self._frozen) + 1):
            chunk = self._chunk(index)
            if chunk.examples:
                yield chunk

    def __iter__(self) -> Iterator[Example]:
        for chunk in self.chunks():
            yield from chunk.examples

    def get(self, row: int) -> Example:
        """The example of one row (0-based)."""
        if not 0 <= row < self.rows:
            raise IndexError(row)
        chunk = self._chunk(row // self.chunk_rows)
        return chunk.examples[row - chunk.start]

    def memory_bytes(self) -> int:
        """Bytes held by the pickled chunks (the open chunk not counted)."""
        return sum(len(b) for b in self._frozen)


def record_shape(record: dict, cache: dict[str, str]) -> str:
    """A short signature of a record's layout: its keys, and for conversations the keys of a
    turn and the role names used (a system turn or not does not count)."""
    keys = ",".join(sorted(map(str, record)))
    for value in record.values():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            keys += "|turns:" + ",".join(sorted(map(str, value[0])))
            roles = {str(t.get("role", t.get("from"))) for t in value if isinstance(t, dict)} - {"system"}
            keys += "|roles:" + "/".join(sorted(roles))
            break
    return cache.setdefault(keys, keys)


@dataclass
class ValidationContext:
    """What validators see. Iterate ``examples`` (or ``examples.chunks()``) as often as needed.

    ``encoder`` renders and masks (template + masking strategy, and the tokenizer when one
    is loaded); ``tokenizer`` is None with ``--no-tokenizer``. ``eval_examples`` is None
    without ``--eval-data``. Validators put their figures in ``stats[their name]`` and may
    add rows to show as token/mask views in the report with ``show_tokens(row, reason)``.
    """

    examples: ExampleStore
    spec: Any  # sftkit.spec.DatasetSpec
    encoder: Any = None  # sftkit.pipeline.Encoder
    tokenizer: Any = None
    max_length: int | None = None
    eval_examples: ExampleStore | None = None
    batch_size: int = 8
    template_name: str = ""
    masking_name: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    token_views: dict[int, dict] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.examples)

    @property
    def markers(self) -> tuple[str, ...]:
        """The template's delimiter strings (``### Response:``), if it declares them."""
        return tuple(m for m in getattr(getattr(self.encoder, "template", None), "markers", ()) if m)

    def show_tokens(self, row: int, tokenized: Any, reason: str = "") -> None:
        """Keep a token/mask view of one row for the report (capped)."""
        if row in self.token_views or len(self.token_views) >= TOKEN_VIEW_LIMIT:
            return
        tokens = []
        text = tokenized.text
        for tid, weight, (start, end) in zip(tokenized.input_ids, tokenized.weights, tokenized.offsets):
            piece = text[start:end] if end > start else self.tokenizer.convert_ids_to_tokens(int(tid))
            tokens.append([piece, float(weight)])
        self.token_views[row] = {"row": row, "reason": reason, "tokens": tokens,
                                 "trained": tokenized.num_trained, "length": tokenized.length_before_truncation}


# -- loading ----------------------------------------------------------------------------------

def load_store(records: Iterable[dict], spec: Any, chunk_rows: int = CHUNK_ROWS) -> ExampleStore:
    """Map raw records to Examples (row numbers from 0) into a chunked store."""
    store = ExampleStore(chunk_rows)
    shapes: dict[str, str] = {}
    for row, record in enumerate(records):
        store.add(spec.to_example(record, row), spec.map_record(record), record_shape(record, shapes))
    return store


# -- running ----------------------------------------------------------------------------------

def resolve_validators(spec: Any, only: Iterable[str] = (), skip: Iterable[str] = (),
                       options: dict[str, dict] | None = None, registry: Any = None) -> list[Callable]:
    """The validators to run, options bound (the spec's ``validators:`` first, then ``options``).

    Unknown validator names or options are rejected before any work starts.
    """
    from sftkit.registry import get_registry

    registry = registry or get_registry()
    available = registry.components("validators")
    only, skip = list(only), list(skip)
    for name in only + skip + list((options or {}).keys()) + list(spec.validators.keys()):
        if name not in available:
            registry.get("validators", name)  # raises with the list of validators
    names = [n for n in available if (not only or n in only) and n not in skip]
    bound = []
    for name in names:
        merged = {**(spec.validators.get(name) or {}), **((options or {}).get(name) or {})}
        bound.append(registry.resolve("validators", name, merged))
    return bound


def run_validators(context: ValidationContext, validators: list[Callable]) -> tuple[list[Issue], dict[str, float]]:
    """Run each validator; a validator that raises is reported as a PluginError naming it."""
    from sftkit.registry import debug_enabled

    issues: list[Issue] = []
    timings: dict[str, float] = {}
    for validator in validators:
        name = validator.__name__
        component = getattr(validator, "component", None)
        plugin = component.plugin if component is not None else "?"
        started = time.perf_counter()
        try:
            found = list(validator(context) or [])
        except SftkitError:
            raise
        except Exception as exc:
            if debug_enabled():
                raise
            raise PluginError(f"validator {name!r} from plugin {plugin} failed: {type(exc).__name__}: {exc}",
                              hint="rerun with SFTKIT_DEBUG=1 for the traceback; --skip "
                                   f"{name} runs the other validators") from None
        timings[name] = round(time.perf_counter() - started, 3)
        for issue in found:
            if not isinstance(issue, Issue) or issue.severity not in SEVERITIES:
                raise PluginError(f"validator {name!r} from plugin {plugin} yielded {issue!r}",
                                  hint="yield sftkit.Issue(validator, code, severity, message, rows) with severity "
                                       "error, warning or info")
            issues.append(issue)
    return issues, timings


def build_result(context: ValidationContext, issues: list[Issue], validators: list[str], *,
                 source: str = "", note: str = "", timings: dict | None = None,
                 skipped: list[DataError] | None = None) -> Result:
    """The validate Result: summary, issues, stats, plus flagged rows' text for the reports."""
    counts = {s: sum(1 for i in issues if i.severity == s) for s in SEVERITIES}
    order = {s: k for k, s in enumerate(SEVERITIES)}
    issues = sorted(issues, key=lambda i: (order[i.severity], validators.index(i.validator)
                                           if i.validator in validators else 99, i.code))
    wanted = {row for issue in issues for row in issue.rows[:EXAMPLES_PER_ISSUE]} | set(context.token_views)
    shown = {row: example_view(context.examples.get(row)) for row in sorted(wanted) if 0 <= row < context.rows}
    data = {
        "summary": {"rows": context.rows, "errors": counts["error"], "warnings": counts["warning"],
                    "infos": counts["info"]},
        "issues": [i.to_dict() for i in issues],
        "stats": context.stats,
        "dataset": {"path": source, "spec": context.spec.name, "note": note, "format": context.spec.format,
                    "task": context.spec.task, "template": context.template_name, "masking": context.masking_name,
                    "max_length": context.max_length, "validators": validators,
                    "skipped_lines": [{"line": e.line, "row": e.row, "message": e.message} for e in (skipped or [])]},
        "examples": {str(row): view for row, view in sorted(shown.items())},
        "token_views": [context.token_views[r] for r in sorted(context.token_views)],
        "timings": timings or {},
    }
    return Result("validate", f"sftkit validate: {Path(source).name or source}", data)


def example_view(example: Example) -> dict[str, Any]:
    """The text of one row for the report: prompt and response."""
    view = {"row": example.row, "prompt": example.prompt_text(), "response": example.response_text()}
    if example.input:
        view["input"] = example.input
    if example.label is not None:
        view["label"] = example.label
    return view


def apply_severity(issues: list[Issue], levels: dict[str, str]) -> list[Issue]:
    """Change issue severities by code (``{"conflicting_labels": "warning"}``); ``off`` drops the code.

    The original severity is kept in ``issue.details["default_severity"]``.
    """
    out = []
    for issue in issues:
        level = levels.get(issue.code)
        if level is None or level == issue.severity:
            out.append(issue)
        elif level != "off":
            issue.details = {**issue.details, "default_severity": issue.severity}
            issue.severity = level
            out.append(issue)
    return out


def failed(result: Result, fail_on: str = "error") -> bool:
    """True when the result has an issue at or above ``fail_on`` (``error`` or ``warning``)."""
    if fail_on not in ("error", "warning"):
        raise UsageError(f"--fail-on must be error or warning, not {fail_on!r}")
    summary = result.data["summary"]
    return summary["errors"] > 0 or (fail_on == "warning" and summary["warnings"] > 0)


def run_validation(
    data: str | Path,
    *,
    spec: str | None = None,
    columns: Iterable[str] = (),
    instruction: str | None = None,
    loader: str | None = None,
    loader_options: dict | None = None,
    template: str | None = None,
    template_options: dict | None = None,
    masking: str = "completion_only",
    masking_options: dict | None = None,
    model: str | None = "smollm2-135m",
    tokenizer: Any = None,
    trust_remote_code: bool = False,
    max_length: int | None = None,
    add_special_tokens: bool = False,
    eval_data: str | Path | None = None,
    only: Iterable[str] = (),
    skip: Iterable[str] = (),
    validator_options: dict[str, dict] | None = None,
    batch_size: int = 8,
    skip_invalid: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    severity: dict[str, str] | None = None,
    registry: Any = None,
) -> Result:
    """Validate a dataset and return the ``Result`` (kind ``validate``) that reporters write.

    Options mirror ``sftkit validate``: ``model=None`` skips tokenizer checks (or pass a
    loaded ``tokenizer``); ``max_length`` defaults to 1024 (TRL's default); ``only``/``skip``
    name validators; ``validator_options`` is ``{"quality": {"near_dup_threshold": 0.8}}``;
    ``severity`` changes issue codes' severities (``{"conflicting_labels": "warning"}``, or
    ``"off"``), on top of the spec's ``severity`` map.
    Use ``failed(result, fail_on)`` to decide whether to stop. Raises ``SftkitError`` (exit 2)
    for unreadable input or bad options. ``result.data`` follows the JSON schema in the README.
    """
    from sftkit.pipeline import build_encoder, check_components, open_records
    from sftkit.registry import get_registry

    registry = registry or get_registry()
    check_components(template, template_options, masking, masking_options, registry)
    skipped: list[DataError] = []
    chosen, note, records = open_records(data, spec=spec, columns=columns, instruction=instruction, loader=loader,
                                         loader_options=loader_options, registry=registry,
                                         skip_invalid=skip_invalid, skipped=skipped)
    validators = resolve_validators(chosen, only, skip, validator_options, registry)
    template_name = template or chosen.default_template
    max_length = max_length or DEFAULT_MAX_LENGTH
    encoder, _added = build_encoder(chosen, template=template, template_options=template_options, masking=masking,
                                    masking_options=masking_options, model=model, tokenizer=tokenizer,
                                    max_length=max_length, add_special_tokens=add_special_tokens,
                                    trust_remote_code=trust_remote_code, registry=registry)
    tokenizer = encoder.tokenizer
    store = load_store(records, chosen, chunk_rows)
    eval_store = None
    if eval_data is not None:
        eval_spec, _, eval_records = open_records(eval_data, spec=spec, columns=columns, instruction=instruction,
                                                  loader=loader, loader_options=loader_options, registry=registry,
                                                  skip_invalid=skip_invalid, skipped=skipped)
        eval_store = load_store(eval_records, eval_spec, chunk_rows)
    context = ValidationContext(
        examples=store, spec=chosen, encoder=encoder, tokenizer=tokenizer,
        max_length=max_length, eval_examples=eval_store, batch_size=batch_size,
        template_name=template_name, masking_name=masking,
    )
    issues, timings = run_validators(context, validators)
    issues = apply_severity(issues, {**chosen.severity, **(severity or {})})
    return build_result(context, issues, [v.__name__ for v in validators], source=str(data), note=note,
                        timings=timings, skipped=skipped)
