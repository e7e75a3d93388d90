"""The validation engine: walk a prepared dataset's chunks with each validator, collect issues.

    prepared = prepare(DataRequest("data.jsonl", spec="alpaca"), RenderSettings(model="smollm2-135m"))
    result = run_validation(prepared, ValidationSettings(skip=("balance",)))
    if failed(result, fail_on="error"): ...

The examples are held in chunks (``sftkit.store``), so validators can walk the data several
times without keeping a million Python objects alive. Validators keep compact per-row state
(hashes, lengths) and yield ``Issue`` objects; ``context.stats[name]`` holds their figures.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from sftkit.errors import DataError, PluginError, UsageError
from sftkit.store import CHUNK_ROWS, Chunk, ExampleStore
from sftkit.types import SEVERITIES, Example, Issue, Result

EXAMPLES_PER_ISSUE = 20  # flagged rows whose text goes into the report, per issue
TOKEN_VIEW_LIMIT = 100


def _field(default: Any = None, doc: str = "", *, factory: Any = None) -> Any:
    """A ValidationContext field with what it means (the README's field table is generated from it)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass
class ValidationContext:
    """What validators see. Iterate ``examples`` (or ``examples.chunks()``) as often as needed.

    Each field's meaning is in its ``doc`` metadata (the README lists them);
    ``sftkit.testing.validation_context`` builds one for a plugin's tests.
    """

    examples: ExampleStore = field(metadata={"doc": (
        "the rows as `sftkit.Example` objects: `for example in context.examples` (row order; `example.row` is "
        "the 0-based index), `len(context.examples)`, `context.examples.get(row)`, and `.chunks()` (blocks of "
        "rows with `.examples` and `.start`, for batched work); iterate as often as needed")})
    spec: Any = field(metadata={"doc": (
        "the dataset spec (`sftkit.spec.DatasetSpec`): `.name`, `.format`, `.task` (classification, "
        "summarization, qa, generation or None), `.labels` (the allowed labels, may be empty), `.validators` "
        "(options per validator from the spec) and `.severity`")})
    encoder: Any = _field(None, (
        "renders and masks exactly as `sftkit train` does (`sftkit.pipeline.Encoder`): `.template` (the bound "
        "template, with its `markers` and options), `.segments(example)`, `.prompt(example)`; with a tokenizer "
        "`.encode(example)` gives the `TokenizedExample` (input_ids, labels, weights, offsets)"))
    tokenizer: Any = _field(None, (
        "the Hugging Face tokenizer of `--model`, or None with `--no-tokenizer` (skip token checks then)"))
    max_length: int | None = _field(None, "the token limit training will apply (`--max-length`, default 1024)")
    eval_examples: ExampleStore | None = _field(None, (
        "the `--eval-data` rows (same store type as `examples`), or None: for train/eval leakage checks"))
    batch_size: int = _field(8, "the training batch size (`--batch-size`), for padding estimates")
    template_name: str = _field("", "the name of the template in use (`alpaca`, `chatml`, ...)")
    masking_name: str = _field("", "the name of the masking strategy in use (`completion_only`, ...)")
    stats: dict[str, Any] = _field(doc=(
        "figures for the report: a validator writes a dict of JSON values under its own name, "
        "`context.stats[\"my_validator\"] = {...}` (validate.json `stats.<validator>`)"), factory=dict)
    token_views: dict[int, dict] = _field(doc=(
        "token/mask views of rows kept for the report; add one with `show_tokens`"), factory=dict)

    @property
    def rows(self) -> int:
        """The number of rows (``len(context.examples)``)."""
        return len(self.examples)

    @property
    def markers(self) -> tuple[str, ...]:
        """The template's declared ``markers``, as they appear in context (``" ASSISTANT:"`` with
        its leading space), empty when it declares none; match ``marker.strip()`` inside text."""
        return tuple(m for m in getattr(getattr(self.encoder, "template", None), "markers", ()) if m)

    def encode(self, chunk: Chunk) -> list:
        """The chunk's rows rendered, masked and tokenized exactly as ``sftkit train`` does: a list
        of ``sftkit.pipeline.Encoded`` (segments, weights, tokens), computed once per run."""
        from sftkit.pipeline import encode_chunk

        return encode_chunk(self.examples, chunk, self.encoder)

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
        from_spec = spec.validators.get(name) or {}
        merged = {**from_spec, **((options or {}).get(name) or {})}
        sources = {option: f"the spec {spec.source or spec.name}, key validators.{name}.{option}" for option in from_spec}
        bound.append(registry.resolve("validators", name, merged, sources=sources))
    return bound


def check_severity_codes(levels: Mapping[str, str], registry: Any, source: str = "--severity") -> None:
    """Refuse a severity change for an issue code no loaded validator declares (a misspelt code
    would be ignored silently), naming the closest known codes. Codes are known from each
    validator's ``codes`` attribute; while one declares none, any code is accepted."""
    import difflib

    known: dict[str, str] = {}
    for name, component in registry.components("validators").items():
        codes = component.attribute("codes")
        if not isinstance(codes, Mapping):
            return
        known.update({str(code): name for code in codes})
    for code in levels:
        if code not in known:
            close = difflib.get_close_matches(code, list(known), n=3, cutoff=0.6)
            raise UsageError(f"{source}: unknown issue code {code!r}"
                             + (f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""),
                             hint="the codes are listed in the README's issue-code table and in each issue of "
                                  "validate.json; e.g. " + ", ".join(sorted(known)[:6]))


def check_validation(spec: Any, settings: "ValidationSettings", registry: Any = None) -> list[Callable]:
    """Everything a validation run is given, checked before any work (the commands call it as
    soon as the spec is known, before the tokenizer loads): validator names, their options by
    value, and the issue codes of the spec's ``severity:`` map and of ``--severity``."""
    from sftkit.registry import get_registry

    registry = registry or get_registry()
    validators = resolve_validators(spec, settings.only, settings.skip, settings.validator_options, registry)
    check_severity_codes(spec.severity, registry, f"the spec {spec.source or spec.name}, key severity")
    check_severity_codes(settings.severity, registry)
    return validators


def run_validators(context: ValidationContext, validators: list[Callable]) -> tuple[list[Issue], dict[str, float]]:
    """Run each validator. A third-party validator that crashes is a PluginError naming it (the
    registry's policy for every component); one that yields something else than an Issue too."""
    issues: list[Issue] = []
    timings: dict[str, float] = {}
    for validator in validators:
        name = validator.__name__
        component = getattr(validator, "component", None)
        plugin = component.plugin if component is not None else "?"
        started = time.perf_counter()
        found = list(validator(context) or [])
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


@dataclass(frozen=True)
class ValidationSettings:
    """Which validators run and how: ``only``/``skip`` name validators, ``validator_options`` is
    ``{"quality": {"near_dup_threshold": 0.8}}``, ``severity`` changes issue codes' severities
    (``{"conflicting_labels": "warning"}`` or ``"off"``) on top of the spec's ``severity`` map,
    ``batch_size`` is for the padding-waste figure."""

    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    validator_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    severity: Mapping[str, str] = field(default_factory=dict)
    batch_size: int = 8
    chunk_rows: int = CHUNK_ROWS


def run_validation(prepared: Any, settings: ValidationSettings = ValidationSettings(), *,
                   eval_data: Any = None) -> Result:
    """Validate a prepared dataset (``sftkit.pipeline.prepare``) and return the ``Result`` (kind
    ``validate``) that reporters write.

    ``eval_data`` is a prepared eval file (``prepared.more(request)``) for the leakage check.
    The rows are read with ``prepared.load()``: ``sftkit train`` loads them first, keeping their
    encodings, so it trains the very rows validated. Token checks run when the prepared encoder has a
    tokenizer, against its max length (``DEFAULT_MAX_LENGTH`` when none is set). Raises
    ``SftkitError`` (exit 2) for unreadable input or bad options; ``failed(result, fail_on)``
    says whether to stop. ``result.data`` follows the JSON schema in the README.
    """
    from sftkit.pipeline import DEFAULT_MAX_LENGTH

    validators = check_validation(prepared.spec, settings, prepared.registry)
    encoder = prepared.encoder
    if encoder.max_length is None:
        encoder = dataclasses.replace(encoder, max_length=DEFAULT_MAX_LENGTH)
    store = prepared.load(settings.chunk_rows)
    eval_store = eval_data.load(settings.chunk_rows) if eval_data is not None else None
    context = ValidationContext(
        examples=store, spec=prepared.spec, encoder=encoder, tokenizer=encoder.tokenizer,
        max_length=encoder.max_length, eval_examples=eval_store, batch_size=settings.batch_size,
        template_name=prepared.template_name, masking_name=prepared.masking_name,
    )
    issues, timings = run_validators(context, validators)
    issues = apply_severity(issues, {**prepared.spec.severity, **settings.severity})
    skipped = list(prepared.skipped) + (list(eval_data.skipped) if eval_data is not None else [])
    return build_result(context, issues, [v.__name__ for v in validators], source=prepared.path,
                        note=prepared.note, timings=timings, skipped=skipped)
