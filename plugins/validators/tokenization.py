"""The ``tokenization`` validator: what the trainer will really see, token by token.

Each chunk is rendered, masked and tokenized exactly as ``sftkit train`` does (one batched
tokenizer call with offsets, ``context.encode``: in a training run, these very encodings then
train); the generation prompt is tokenized alone (one more batched call) to check it is a
token prefix of the training text.
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Annotated, Iterator

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads where used: `sftkit plugins` stays light
    import numpy as np
from pydantic import Field

from sftkit import Issue
from sftkit.plugins.validators.text import rows as count_rows
from sftkit.pipeline import generation_prompt
from sftkit.tokenize import marker_tokens

LENGTH_SAMPLE = 5000
MESSAGES = {
    "truncated_response": ("error", "response tokens cut by truncation at {limit} in {n}: the "
                                    "model learns to stop mid-answer"),
    "truncated_source": ("warning", "encoder input tokens cut by truncation at max_source_length {source_limit} in "
                                    "{n}: the model answers without the end of the prompt"),
    "no_trainable_tokens": ("error", "no trained token in {n}: such rows add nothing but cost compute"),
    "eos_not_trained": ("error", "the end-of-turn/EOS token is not trained in {n}: the model will not learn "
                                 "to stop"),
    "double_bos": ("warning", "two BOS tokens at the start of {n} (the template renders BOS and the tokenizer "
                              "adds another)"),
    "template_not_prefix_preserving": ("error", "the prompt rendered alone is not a token prefix of "
                                                "prompt+response in {n}: inference sees other tokens than training"),
    "marker_split": ("warning", "a template marker tokenizes differently in context than alone in {n}"),
}


def prompt_token_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of many prompts, as ``tokenizer(prompts)`` gives them (through the Rust tokenizer
    directly when there is one and it neither truncates nor pads: three times faster)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.truncation is None and backend.padding is None:
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [e.ids for e in encode(prompts, add_special_tokens=True)]
    return tokenizer(prompts)["input_ids"]


def tokenization(context,
                 batch_size: Annotated[int, Field(ge=0, le=2**20, description="examples per batch for the padding "
                                                                              "figure (0: the command's --batch-size)")] = 0,
                 prefix_check: Annotated[bool, Field(description="check that the generation prompt tokenizes as a "
                                                                 "prefix of the training text")] = True,
                 samples: Annotated[int, Field(ge=0, le=100, description="rows shown as token views in the report "
                                                                         "besides the flagged ones")] = 3,
                 ) -> Iterator[Issue]:
    """Truncated responses, untrained EOS, no trained tokens, double BOS, prefix and marker checks; token stats."""
    import numpy as np
    tokenizer = context.tokenizer
    if tokenizer is None:
        context.stats["tokenization"] = {"skipped": "no tokenizer (--no-tokenizer)"}
        return
    max_length = context.max_length
    batch = batch_size or context.batch_size
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    markers = {m: tokenizer(m, add_special_tokens=False)["input_ids"] for m in context.markers}
    split_example: dict[str, dict] = {}
    total = context.rows
    sampled = set(random.Random(0).sample(range(total), min(samples, total)))
    lengths = np.zeros(total, dtype=np.int64)
    trained = np.zeros(total, dtype=np.int64)
    flagged: dict[str, list[int]] = defaultdict(list)
    for chunk in context.examples.chunks():
        encoded = context.encode(chunk)  # the rows exactly as sftkit train encodes them (once per run)
        prompts = [generation_prompt(row.segments) if prefix_check else "" for row in encoded]
        prompt_ids = prompt_token_ids(tokenizer, prompts) if prefix_check else [None] * len(prompts)
        for example, row_encoding, pids in zip(chunk.examples, encoded, prompt_ids):
            segments, tok = row_encoding.segments, row_encoding.tokens
            row = example.row
            lengths[row] = tok.length_before_truncation
            trained[row] = num_trained = len(tok.labels) - tok.labels.count(-100)
            codes = []
            if tok.trained_tokens_lost:
                codes.append("truncated_response")
            if tok.source_tokens_lost:
                codes.append("truncated_source")
            if num_trained == 0:
                codes.append("no_trainable_tokens")
            elif not tok.trained_tokens_lost and not _eos_trained(segments, tok, tokenizer.eos_token, eos):
                codes.append("eos_not_trained")
            ids = tok.input_ids[:tok.source_length] if tok.is_encoder_decoder else tok.input_ids
            if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
                codes.append("double_bos")
            if pids is not None and prompts[row - chunk.start]:
                if pids and eos is not None and pids[-1] == eos and not prompts[row - chunk.start].endswith(
                        tokenizer.eos_token or "\0"):
                    pids = pids[:-1]
                n = min(len(pids), len(ids))
                if list(pids[:n]) != list(ids[:n]):
                    codes.append("template_not_prefix_preserving")
            starts = [o[0] for o in tok.offsets] if markers else []
            for marker, alone in markers.items():
                found = marker_tokens(tok, segments, marker, starts)
                if found is not None and not (found.aligned and found.ids == alone):
                    codes.append("marker_split")
                    split_example.setdefault(marker, {
                        "alone": tokenizer.convert_ids_to_tokens(alone),
                        "in_context": tokenizer.convert_ids_to_tokens(found.ids), "row": row,
                        **({"leading_space": found.leading, "declare_as": found.leading + marker}
                           if found.leading else {})})
                    break
            for code in codes:
                flagged[code].append(row)
            if codes:
                context.show_tokens(row, tok, ", ".join(codes))
            elif row in sampled:
                context.show_tokens(row, tok, "sample")
    for code, (severity, template) in MESSAGES.items():
        rows = flagged.get(code)
        if rows:
            message = template.format(n=count_rows(len(rows)), limit=_limit(context), source_limit=_source_limit(context))
            details = {"markers": split_example} if code == "marker_split" else {}
            if code == "marker_split":
                message += _leading_space_note(split_example)
            yield Issue("tokenization", code, severity, message, rows, details)
    context.stats["tokenization"] = _stats(lengths, trained, max_length, batch)


def _limit(context) -> str:
    """The limit a response is cut at: ``max_length N``, or for an encoder-decoder model
    ``max_target_length N`` (its decoder target has a limit of its own)."""
    encoder = context.encoder
    if getattr(encoder, "encoder_decoder", False):
        return f"max_target_length {encoder.target_limit}"
    return f"max_length {context.max_length}"


def _source_limit(context) -> int | None:
    return getattr(context.encoder, "source_limit", None)


def _leading_space_note(split: dict[str, dict]) -> str:
    """The advice for markers whose first token absorbs the whitespace before them in context."""
    spaced = {marker: info["declare_as"] for marker, info in split.items() if "declare_as" in info}
    if not spaced:
        return ""
    shown = ", ".join(f"{marker!r} (declare it as {declared!r})" for marker, declared in spaced.items())
    return (f"; {shown}: the difference comes from the whitespace before the marker in context, which its first "
            f"token absorbs; declare the template's markers as they appear in context, leading space included")


def _eos_trained(segments, tok, eos_text: str | None, eos_id: int | None) -> bool:
    """True when the final end segment (EOS / end of turn) is present and has trained tokens."""
    end = next((i for i in range(len(segments) - 1, -1, -1) if segments[i].part == "end"), None)
    if end is None or not segments[end].text:
        return False
    trained = False
    for index in range(len(tok.segment_index) - 1, -1, -1):  # the end segment is at the end
        if tok.segment_index[index] < end:
            break
        if tok.segment_index[index] == end and tok.weights[index] > 0:
            trained = True
            break
    if not trained:
        return False
    if eos_id is not None and segments[end].text == eos_text:
        return eos_id in tok.labels
    return True


def _stats(lengths: np.ndarray, trained: np.ndarray, max_length: int, batch: int) -> dict:
    import numpy as np
    total = len(lengths)
    if not total:
        return {"rows": 0}
    kept = np.minimum(lengths, max_length)
    padded = 0
    for start in range(0, total, batch):
        part = kept[start:start + batch]
        padded += int(part.max()) * len(part)
    p50, p95 = np.percentile(lengths, [50, 95])
    step = max(1, total // LENGTH_SAMPLE)
    return {
        "rows": total,
        "max_length": max_length,
        "tokens_p50": float(p50),
        "tokens_p95": float(p95),
        "tokens_max": int(lengths.max()),
        "tokens_mean": round(float(lengths.mean()), 1),
        "over_max_length": int((lengths > max_length).sum()),
        "share_over_max_length": round(float((lengths > max_length).mean()), 4),
        "trained_tokens": int(trained.sum()),
        "trained_share": round(float(trained.sum() / max(1, kept.sum())), 4),
        "batch_size": batch,
        "padding_waste": round(1 - float(kept.sum()) / max(1, padded), 4),
        "lengths_sample": lengths[::step][:LENGTH_SAMPLE].tolist(),
    }


tokenization.codes = {  # code: (severity, what it means, how to fix); the README table is generated from it
    'truncated_response': (
        'error',
        'the training text is longer than `--max-length` (the target of an encoder-decoder model longer than '
        '`--max-target-length`), so response tokens (and the EOS) are cut: the model learns to stop mid-answer',
        'raise `--max-length` (`--max-target-length`), shorten the prompts, or drop the rows',
    ),
    'truncated_source': (
        'warning',
        'encoder-decoder models: the prompt is longer than `--max-source-length` (default `--max-length`), so the '
        'end of the encoder input is cut: the model answers without it',
        'raise `--max-source-length`, or shorten the prompts',
    ),
    'no_trainable_tokens': (
        'error',
        'no token of the row trains (the response is cut away entirely, or the masking trains '
        'nothing)',
        'fix max length or masking; drop the rows',
    ),
    'eos_not_trained': (
        'error',
        'the end-of-turn/EOS token is missing or masked (or written as text that does not become the '
        'EOS id): the model will not learn to stop',
        'use a template/masking that trains the end token',
    ),
    'double_bos': (
        'warning',
        'the sequence starts with two BOS tokens: the template renders BOS and the tokenizer adds '
        'another',
        "drop the BOS from the template (or the tokenizer's `add_bos_token`)",
    ),
    'template_not_prefix_preserving': (
        'error',
        'the prompt tokenized alone is not a prefix of the tokenized prompt+response (e.g. a prompt '
        "ending in a space that the response's first word absorbs): inference sees other tokens than "
        'training',
        'end the prompt on a token boundary (a newline), or strip leading whitespace from responses',
    ),
    'marker_split': (
        'warning',
        'a template marker tokenizes differently where the template renders it than alone; '
        '`details.markers` shows both tokenizations, and `declare_as` when the difference is only the '
        'whitespace before it (`Answer:` rendered as ` Answer:`)',
        'declare the marker as it appears in context (` Answer:`, leading space included); otherwise put a '
        'newline before it, or add it as a special token (`--add-special-tokens`)',
    ),
}
