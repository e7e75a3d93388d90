"""The data of a run: every training file prepared once, validated, and encoded into samples.

Each row is read, rendered and tokenized once per run: the pre-flight validation walks the
same chunked store that then trains (``Prepared.load(keep_encodings=True)``), so the tokens
it checked are the tokens the trainer sees. Later sources and the eval file reuse the first
source's encoder and tokenizer (one vocabulary, one prompt format).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftkit.errors import SftkitError, UsageError
from sftkit.recipe import Recipe
from sftkit.train.data import Sample, Source, to_sample


class ValidationFailed(SftkitError):
    """The training data failed validation (exit 1, like ``sftkit validate``)."""

    exit_code = 1


@dataclass
class TrainData:
    """Encoded training sources, eval samples and what the run folder records about them."""

    sources: list[Source]
    eval_samples: list[Sample]
    prepared: Any  # the first source's sftkit.pipeline.Prepared: encoder, tokenizer, spec, template
    notes: list[str] = field(default_factory=list)
    eval_stats: dict = field(default_factory=dict)
    validation: dict | None = None  # validate summary per training file, when validation ran

    @property
    def tokenizer(self) -> Any:
        return self.prepared.tokenizer

    @property
    def added_tokens(self) -> list[str]:
        return list(self.prepared.added_tokens)


def load_training_data(recipe: Recipe, *, validate: bool, report_dir: Path | None = None,
                       write_reports: bool = True) -> TrainData:
    """Prepare, (optionally) validate and encode every ``data`` source and the ``eval_data``.

    Validation failing on a file raises ``ValidationFailed`` with the path of its report
    (written into ``report_dir`` when ``write_reports``: the main process).
    """
    from sftkit.pipeline import prepare
    from sftkit.validation import ValidationSettings, check_validation

    # the spec's validator options and severity codes are checked before the tokenizer loads
    checks = [lambda spec: check_validation(spec, ValidationSettings())] if validate else []
    first = prepare(recipe.data_request(recipe.data[0]), recipe.rendering, checks=checks)
    prepared = [first] + [first.more(recipe.data_request(item)) for item in recipe.data[1:]]
    evals = first.more(recipe.eval_request()) if recipe.eval_data else None
    for item in prepared:
        item.load(keep_encodings=True)
    validation = validate_sources(prepared, evals, report_dir if write_reports else None) if validate else None
    sources, notes = [], []
    for item, source in zip(prepared, recipe.data):
        sources.append(_source(item, source.weight, recipe))
        notes.append(f"{item.path}: {item.note}")
        notes.extend(f"skipped: {e.message}" for e in item.skipped)  # --skip-invalid lists what it left out
    eval_samples, eval_stats = [], {}
    if evals is not None:
        eval_samples, eval_stats = _encode(evals)
        notes.extend(f"skipped (eval data): {e.message}" for e in evals.skipped)
    return TrainData(sources, eval_samples, first, notes, eval_stats, validation)


def validate_sources(prepared: list, evals: Any, report_dir: Path | None) -> dict:
    """Run ``sftkit validate`` on each training file (the eval file checked for leakage with the
    first); errors abort with the report's path."""
    from sftkit.reporting import write_reports
    from sftkit.validation import failed, run_validation

    summaries = {}
    for index, item in enumerate(prepared):
        result = run_validation(item, eval_data=evals if index == 0 else None)
        summaries[item.path] = result.data.get("summary", {})
        if failed(result, "error"):
            written = write_reports(result, report_dir, item.registry) if report_dir is not None else []
            shown = next((p for p in written if p.suffix == ".html"), written[0] if written else None)
            raise ValidationFailed(
                f"{item.path}: validation found {result.data['summary']['errors']} error(s); training did not start",
                hint=(f"see the report {shown}; " if shown else "") + "fix the data, or pass --no-validate to train anyway")
    return summaries


def _encode(prepared: Any) -> tuple[list[Sample], dict]:
    """The samples of a prepared file (rows with no trained token dropped) and their figures."""
    from sftkit.pipeline import encoded_rows

    tokenized = [row.tokens for row in encoded_rows(prepared.load(), prepared.encoder)]
    samples = [s for s in (to_sample(t) for t in tokenized) if len(s.target)]
    lengths = [s.length for s in samples]
    skipped = len(prepared.skipped)
    return samples, {
        "rows": len(tokenized) + skipped,
        "skipped_lines": skipped,
        "used": len(samples),
        "dropped_no_trained_tokens": len(tokenized) - len(samples),
        "truncated": sum(1 for t in tokenized if t.truncated),
        "tokens": int(sum(lengths)),
        "trained_tokens": int(sum(len(s.target) for s in samples)),
        "mean_length": round(sum(lengths) / len(lengths), 1) if lengths else 0.0,
        "max_length": max(lengths) if lengths else 0,
    }


def _source(prepared: Any, weight: float, recipe: Recipe) -> Source:
    samples, stats = _encode(prepared)
    if not samples:
        raise UsageError(f"{prepared.path}: no example has a trained token (masking {prepared.masking_name}, "
                         f"max length {recipe.max_length})", hint="check --masking and --max-length with sftkit preview")
    stats["spec"] = prepared.spec.name
    stats["skipped"] = [{"line": e.line, "row": e.row, "message": e.message} for e in prepared.skipped]
    return Source(prepared.path, samples, weight, stats)
