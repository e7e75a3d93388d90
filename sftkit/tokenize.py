"""Render, mask and tokenize: the step from an Example to input_ids and labels.

The joined segment text is tokenized once, with offsets; each token takes the loss weight of
the segment that holds its last character (so a token that merges a marker's trailing space
with the first word of the response trains with the response). Labels are -100 where the
weight is 0. No marker is ever searched for in token ids.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from sftkit.errors import PluginError
from sftkit.registry import describe
from sftkit.types import Example, RenderContext, Segment, TokenizedExample

IGNORE_INDEX = -100


def render(example: Example, template: Callable, context: RenderContext) -> list[Segment]:
    """Render an example with a template, checking the template returned segments."""
    segments = template(example, context)
    if not isinstance(segments, list) or not all(isinstance(s, Segment) for s in segments):
        raise PluginError(f"{describe(template, 'templates')} returned {type(segments).__name__}, expected a list "
                          "of Segment", hint="return [Segment(text, role, part, turn), ...]")
    return segments


def mask(segments: list[Segment], strategy: Callable) -> list[float]:
    """Loss weights per segment from a masking strategy, checked for length and range."""
    raw = strategy(segments)
    try:
        weights = [float(w) for w in raw]
    except (TypeError, ValueError):
        raise PluginError(f"{describe(strategy, 'masking_strategies')} returned {type(raw).__name__}, expected a "
                          "list of numbers", hint="return one weight in [0, 1] per segment") from None
    if len(weights) != len(segments):
        raise PluginError(f"{describe(strategy, 'masking_strategies')} returned {len(weights)} weights for "
                          f"{len(segments)} segments", hint="return exactly one weight per segment")
    return weights


def context_for(tokenizer: Any) -> RenderContext:
    """The RenderContext for a tokenizer (or an empty one without a tokenizer)."""
    if tokenizer is None:
        return RenderContext()
    return RenderContext(eos_token=tokenizer.eos_token or "", bos_token=tokenizer.bos_token or "", tokenizer=tokenizer)


def tokenize_many(
    items: Sequence[tuple[list[Segment], list[float]]],
    tokenizer: Any,
    max_length: int | None = None,
    add_special_tokens: bool = True,
) -> list[TokenizedExample]:
    """Tokenize many (segments, weights) pairs in one tokenizer call."""
    texts = ["".join(s.text for s in segments) for segments, _ in items]
    if not texts:
        return []
    encoded = tokenizer(texts, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
    out = []
    for (segments, weights), text, ids, offsets in zip(items, texts, encoded["input_ids"], encoded["offset_mapping"]):
        out.append(_label(segments, weights, text, list(ids), [tuple(o) for o in offsets], max_length))
    return out


def target_span(segments: Sequence[Segment]) -> tuple[int, int]:
    """Where the final response lies in an encoder-decoder split: segments ``[start, end)`` are
    the decoder target (the final assistant turn's content and end token), everything before
    ``start`` the encoder input; what follows ``end`` belongs to neither side. ``start == end ==
    len(segments)`` when there is no response."""
    last = max((s.turn for s in segments if s.role == "assistant" and s.part in ("content", "end")), default=None)
    start = next((i for i, s in enumerate(segments) if s.is_response and s.turn == last), len(segments))
    end = start
    while end < len(segments) and segments[end].is_response and segments[end].turn == last:
        end += 1
    return start, end


def tokenize_seq2seq(
    items: Sequence[tuple[list[Segment], list[float]]],
    tokenizer: Any,
    max_source_length: int | None = None,
    max_target_length: int | None = None,
) -> list[TokenizedExample]:
    """Tokenize (segments, weights) pairs for an encoder-decoder model: the prompt segments as the
    encoder input (with the tokenizer's special tokens, as a prompt is tokenized for generation),
    the final response and its end token as the decoder target (no special tokens added: the
    template's end text is the end token). The encoder side never trains; the target keeps the
    masking's weights. Each side is cut at its own limit."""
    if not items:
        return []
    spans = [target_span(segments) for segments, _ in items]
    sources = ["".join(s.text for s in segments[:start]) for (segments, _), (start, _end) in zip(items, spans)]
    targets = ["".join(s.text for s in segments[start:end]) for (segments, _), (start, end) in zip(items, spans)]
    source_enc = tokenizer(sources, return_offsets_mapping=True, add_special_tokens=True)
    target_enc = tokenizer(targets, return_offsets_mapping=True, add_special_tokens=False)
    out = []
    for index, ((segments, weights), (start, end)) in enumerate(zip(items, spans)):
        source = _label(segments[:start], [0.0] * start, sources[index], list(source_enc["input_ids"][index]),
                        [tuple(o) for o in source_enc["offset_mapping"][index]], max_source_length)
        target = _label(segments[start:end], list(weights[start:end]), targets[index],
                        list(target_enc["input_ids"][index]),
                        [tuple(o) for o in target_enc["offset_mapping"][index]], max_target_length)
        shift = len(sources[index])
        out.append(TokenizedExample(
            input_ids=source.input_ids + target.input_ids,
            labels=[IGNORE_INDEX] * len(source.input_ids) + target.labels,
            weights=[0.0] * len(source.input_ids) + target.weights,
            segment_index=source.segment_index + [i + start for i in target.segment_index],
            offsets=source.offsets + [(a + shift, b + shift) for a, b in target.offsets],
            text=sources[index] + targets[index],
            length_before_truncation=source.length_before_truncation + target.length_before_truncation,
            trained_tokens_lost=target.trained_tokens_lost,
            source_length=len(source.input_ids),
            source_tokens_lost=source.length_before_truncation - len(source.input_ids),
        ))
    return out


def _label(segments, weights, text, ids, offsets, max_length) -> TokenizedExample:
    import numpy as np
    ends = np.cumsum([len(s.text) for s in segments]) if segments else np.zeros(0, dtype=int)
    n = len(ids)
    seg_index = np.zeros(n, dtype=np.int64)
    if n and len(segments):
        offs = np.asarray(offsets, dtype=np.int64).reshape(n, 2)
        empty = offs[:, 1] <= offs[:, 0]
        last_char = np.maximum(offs[:, 1] - 1, 0)
        seg_index = np.searchsorted(ends, last_char, side="right")
        # Tokens with no text (added BOS/EOS) take the segment of the token before them.
        if empty.any():
            for i in np.nonzero(empty)[0]:
                seg_index[i] = seg_index[i - 1] if i > 0 else 0
        seg_index = np.minimum(seg_index, len(segments) - 1)
    w = np.asarray(weights, dtype=np.float64)[seg_index] if len(segments) else np.zeros(n)
    labels = np.where(w > 0, np.asarray(ids, dtype=np.int64), IGNORE_INDEX) if n else np.zeros(0, dtype=np.int64)
    lost = 0
    if max_length is not None and n > max_length:
        lost = int((labels[max_length:] != IGNORE_INDEX).sum())
        ids, offsets = ids[:max_length], offsets[:max_length]
        labels, w, seg_index = labels[:max_length], w[:max_length], seg_index[:max_length]
    return TokenizedExample(
        input_ids=list(ids),
        labels=labels.tolist(),
        weights=w.tolist(),
        segment_index=seg_index.tolist(),
        offsets=list(offsets),
        text=text,
        length_before_truncation=n,
        trained_tokens_lost=lost,
    )


@dataclass(frozen=True)
class MarkerTokens:
    """How a template's marker tokenizes where the template renders it (``marker_tokens``).

    ``ids``: the tokens covering it in context; ``aligned``: they start and end exactly at the
    marker; ``leading``: whitespace just before the marker that its first token absorbs (a
    marker declared ``"ASSISTANT:"`` rendered as ``" ASSISTANT:"``), else ``""``.
    """

    start: int
    end: int
    ids: list[int]
    aligned: bool
    leading: str


def marker_tokens(tokenized: TokenizedExample, segments: Sequence[Segment], marker: str,
                  starts: Sequence[int] | None = None) -> MarkerTokens | None:
    """The first occurrence of ``marker`` that the template itself rendered (ending inside a
    ``marker`` segment, so the same text inside a message does not count), with the tokens
    covering it; None when it does not occur or truncation cut it off.

    ``starts`` (each token's start offset) may be passed when calling this for many markers.
    """
    import numpy as np
    text, offsets, ids = tokenized.text, tokenized.offsets, tokenized.input_ids
    if not offsets or not marker:
        return None
    ends = np.cumsum([len(s.text) for s in segments])
    starts = [o[0] for o in offsets] if starts is None else starts
    start = text.find(marker)
    while start >= 0:
        end = start + len(marker)
        index = int(np.searchsorted(ends, end - 1, side="right"))
        if index < len(segments) and segments[index].part == "marker":
            break
        start = text.find(marker, start + 1)
    if start < 0 or end > offsets[-1][1]:  # not rendered as a marker, or cut off by truncation
        return None
    first = bisect.bisect_right(starts, start) - 1
    last = bisect.bisect_left(starts, end)
    if first < 0 or last <= first:
        return None
    token_start = offsets[first][0]
    leading = text[token_start:start] if token_start < start and text[token_start:start].isspace() else ""
    aligned = token_start == start and offsets[last - 1][1] == end
    return MarkerTokens(start, end, list(ids[first:last]), aligned, leading)
