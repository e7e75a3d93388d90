"""The data of a run: every training file prepared once, validated, and encoded into samples.

Each row is read, rendered and tokenized once per run: the pre-flight validation walks the
same chunked store that then trains (``Prepared.load(keep_encodings=True)``), so the tokens
it checked are the tokens the trainer sees. Later sources and the eval file reuse the first
source's encoder and tokenizer (one vocabulary, one prompt format).

The samples go into the Arrow cache of ``sftkit.train.cache`` (memory-mapped; a later run
with the same file, tokenizer and rendering reads it and tokenizes nothing). Without
validation the rows stream from the file into ``num_proc`` tokenizing processes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from sftkit.errors import SftkitError, UsageError
from sftkit.recipe import Recipe
from sftkit.train.data import Sample, Source


class ValidationFailed(SftkitError):
    """The training data failed validation (exit 1, like ``sftkit validate``)."""

    exit_code = 1


@dataclass
class TrainData:
    """Encoded training sources, eval samples and what the run folder records about them."""

    sources: list[Source]
    eval_samples: Sequence[Sample]
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
    validation = None
    if validate:
        for item in prepared:
            item.load(keep_encodings=True)
        validation = validate_sources(prepared, evals, report_dir if write_reports else None,
                                      reporters=(recipe.reporters or (), recipe.no_reporters))
    sources, notes = [], []
    for item, source in zip(prepared, recipe.data):
        samples, stats = encoded_samples(item, recipe, loaded=validate)
        if not len(samples):
            raise UsageError(f"{item.path}: no example has a trained token (masking {item.masking_name}, "
                             f"max length {recipe.max_length})",
                             hint="check --masking and --max-length with sftkit preview")
        stats["spec"] = item.spec.name
        sources.append(Source(item.path, samples, source.weight, stats))
        notes.append(f"{item.path}: {item.note}")
        notes.extend(f"skipped: {e['message']}" for e in stats["skipped"])  # --skip-invalid lists what it left out
    eval_samples, eval_stats = [], {}
    if evals is not None:
        eval_samples, eval_stats = encoded_samples(evals, recipe, loaded=validate)
        notes.extend(f"skipped (eval data): {e['message']}" for e in eval_stats.pop("skipped"))
    return TrainData(sources, eval_samples, first, notes, eval_stats, validation)


def validate_sources(prepared: list, evals: Any, report_dir: Path | None,
                     reporters: tuple[Sequence[str], Sequence[str]] = ((), ())) -> dict:
    """Run ``sftkit validate`` on each training file (the eval file checked for leakage with the
    first); errors abort with the report's path (``reporters``: the recipe's reporters and
    no_reporters)."""
    from sftkit.reporting import choose_reporters, write_reports
    from sftkit.validation import failed, run_validation

    summaries = {}
    for index, item in enumerate(prepared):
        result = run_validation(item, eval_data=evals if index == 0 else None)
        summaries[item.path] = result.data.get("summary", {})
        if failed(result, "error"):
            chosen = choose_reporters(item.registry, *reporters)
            written = write_reports(result, report_dir, item.registry, reporters=chosen) if report_dir is not None else []
            shown = next((p for p in written if p.suffix == ".html"), written[0] if written else None)
            raise ValidationFailed(
                f"{item.path}: validation found {result.data['summary']['errors']} error(s); training did not start",
                hint=(f"see the report {shown}; " if shown else "") + "fix the data, or pass --no-validate to train anyway")
    return summaries


def encoded_samples(prepared: Any, recipe: Recipe, *, loaded: bool) -> tuple[Sequence[Sample], dict]:
    """The samples of a prepared file (rows with no trained token dropped) and their figures.

    From the Arrow cache when it holds this file's key; else encoded (the encodings that
    validation kept when ``loaded``, else streamed through the tokenizing workers) and, with
    ``data_cache``, written to the cache and memory-mapped back (kept in memory instead when
    the cache folder cannot be written).
    """
    from sftkit.train import cache

    key = cache.data_key(prepared) if recipe.data_cache and cache.writable() else None
    hit = cache.open_cache(key) if key else None
    if hit is not None:
        if loaded:
            _drop_encodings(prepared)
        samples, meta = hit
        return samples, _figures(samples, meta)
    blocks = _kept_blocks(prepared) if loaded else cache.encode_blocks(prepared.examples(), prepared.encoder,
                                                                       recipe.num_proc)

    def meta() -> dict:
        return {"path": str(prepared.path), "skipped": [{"line": e.line, "row": e.row, "message": e.message}
                                                        for e in prepared.skipped]}

    if key is None:
        blocks = list(blocks)
        samples = cache.EncodedSet.from_blocks(blocks)
        info = {**meta(), "rows": sum(b.rows for b in blocks), "truncated": sum(b.truncated for b in blocks),
                "used": len(samples)}
        return samples, _figures(samples, info)
    folder = cache.write_cache(key, blocks, meta)
    samples, info = cache.open_cache(folder.name) or (None, None)
    if samples is None:  # pragma: no cover - the folder was just written
        raise SftkitError(f"the encoded data cache {folder} could not be read back")
    return samples, _figures(samples, info)


def _kept_blocks(prepared: Any):
    """The encodings validation kept, chunk by chunk, as compact blocks (each chunk's full
    encodings are dropped once converted)."""
    from sftkit.pipeline import encode_chunk
    from sftkit.train.cache import block_of

    store = prepared.load()
    for chunk in store.chunks():
        rows = encode_chunk(store, chunk, prepared.encoder)
        yield block_of(row.tokens for row in rows)
        if store.encodings is not None:
            store.encodings.pop(chunk.start, None)


def _drop_encodings(prepared: Any) -> None:
    store = prepared.load()
    if store.encodings is not None:
        store.encodings.clear()


def _figures(samples: Any, meta: dict) -> dict:
    """What train.json reports about a file's samples."""
    lengths = samples.lengths()
    skipped = list(meta.get("skipped", []))
    return {
        "rows": int(meta["rows"]) + len(skipped),
        "skipped_lines": len(skipped),
        "used": len(samples),
        "dropped_no_trained_tokens": int(meta["rows"]) - len(samples),
        "truncated": int(meta["truncated"]),
        "tokens": int(lengths.sum()),
        "trained_tokens": samples.trained(),
        "mean_length": round(float(lengths.mean()), 1) if len(lengths) else 0.0,
        "max_length": int(lengths.max()) if len(lengths) else 0,
        "skipped": skipped,
    }
