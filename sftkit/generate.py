"""Batched greedy generation with left padding, stopping at EOS or the template's end of turn.

Prompts are tokenized exactly as in training (``add_special_tokens=True``, the same
tokenizer), sorted by length (longest first, so that rows decoding together have similar
lengths), left-padded, and decoded greedily: by :mod:`sftkit.decoding` (rows leave the batch
as they stop, waiting prompts take their places) for plain decoder-only models, else with
``model.generate`` batch by batch. A batch holds at most ``batch_size`` rows and at most
``max_batch_tokens`` tokens of KV cache (rows x (padded prompt + ``max_new_tokens``)), so one
very long prompt does not pad fifteen short ones to its length. A sequence stops at the
tokenizer's EOS, at the template's end-of-turn text (a token id when it is one token, a stop
string otherwise) or after ``max_new_tokens``; the output is cut before the stop and returned
in the original order.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

STOP_EOS = "eos"
STOP_END_OF_TURN = "end_of_turn"
STOP_LIMIT = "max_new_tokens"


@dataclass
class Generation:
    """One generated output: the text (cut before the stop), its token count, why it stopped."""

    text: str
    tokens: int
    stopped: str  # eos | end_of_turn | max_new_tokens
    token_ids: tuple[int, ...] = ()

    @property
    def hit_limit(self) -> bool:
        return self.stopped == STOP_LIMIT


@dataclass(frozen=True)
class Stops:
    """What ends a generation: token ids, and texts that are longer than one token."""

    token_ids: tuple[int, ...]
    strings: tuple[str, ...]
    eos_ids: tuple[int, ...]


def stops_for(tokenizer: Any, end_texts: Iterable[str] = ()) -> Stops:
    """EOS plus each end-of-turn text: as a token id when it is a single token, else a string."""
    eos_ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids, strings = list(eos_ids), []
    for text in end_texts:
        if not text or not text.strip():
            continue
        pieces = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(pieces) == 1:
            if pieces[0] not in ids:
                ids.append(pieces[0])
        elif text not in strings:
            strings.append(text)
    return Stops(tuple(ids), tuple(strings), tuple(eos_ids))


@contextmanager
def left_padding(tokenizer: Any):
    """Temporarily pad on the left (what decoder-only batched generation needs)."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = side


def _finish(tokenizer: Any, new_ids: Sequence[int], stops: Stops, max_new_tokens: int) -> Generation:
    ids = list(new_ids)
    stopped = None
    for position, token in enumerate(ids):
        if token in stops.token_ids:
            stopped = STOP_EOS if token in stops.eos_ids else STOP_END_OF_TURN
            ids = ids[:position]
            break
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for stop in stops.strings:
        cut = text.find(stop)
        if cut >= 0:
            text, stopped = text[:cut], STOP_END_OF_TURN
    if stopped is None:
        stopped = STOP_LIMIT if len(ids) >= max_new_tokens else STOP_EOS
    return Generation(text=text, tokens=len(ids), stopped=stopped, token_ids=tuple(ids))


def make_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None,
                 sort_by_length: bool = True) -> list[list[int]]:
    """Prompt indices in batches: longest first, at most ``batch_size`` prompts and at most
    ``max_batch_tokens`` padded tokens (batch size x longest length) a batch."""
    order = list(range(len(lengths)))
    if sort_by_length:
        order.sort(key=lambda i: -lengths[i])  # longest first: a memory problem shows at once
    batches: list[list[int]] = []
    for index in order:
        current = batches[-1] if batches else None
        if current is not None and len(current) < batch_size:
            longest = max(lengths[i] for i in current + [index])
            if max_batch_tokens is None or longest * (len(current) + 1) <= max_batch_tokens:
                current.append(index)
                continue
        batches.append([index])
    return batches


MIN_SHARED_PREFIX = 8
# the default bound of a batch: rows x (padded prompt + max_new_tokens) tokens in its KV cache
DEFAULT_BATCH_TOKENS = 16384


def shared_prefix_length(encoded: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every prompt has in common (each keeps at least one of its own)."""
    if not encoded:
        return 0
    limit = min(len(ids) for ids in encoded) - 1
    first = encoded[0]
    length = 0
    while length < limit and all(ids[length] == first[length] for ids in encoded):
        length += 1
    return length


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int = 64, batch_size: int = 32,
             max_batch_tokens: int | None = DEFAULT_BATCH_TOKENS, end_texts: Iterable[str] = (), progress: bool = True,
             description: str = "generating", sort_by_length: bool = True, share_prefix: bool = True) -> list[Generation]:
    """Greedy outputs for ``prompts`` (texts, in their order): tokenized as in training, then
    :func:`generate_ids`."""
    stops = stops_for(tokenizer, end_texts)
    prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    return generate_ids(model, tokenizer, prompt_ids, stops, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        max_batch_tokens=max_batch_tokens, progress=progress, description=description,
                        sort_by_length=sort_by_length, share_prefix=share_prefix)


def generate_ids(model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], stops: Stops, *,
                 max_new_tokens: int = 64, batch_size: int = 32, max_batch_tokens: int | None = DEFAULT_BATCH_TOKENS,
                 progress: bool = True, description: str = "generating", sort_by_length: bool = True,
                 share_prefix: bool = True) -> list[Generation]:
    """Greedy outputs for already tokenized prompts (in their order), each stopped at ``stops``
    or after ``max_new_tokens``; at most ``batch_size`` prompts decode at once, fewer where
    their padded length plus ``max_new_tokens``, times their count, would exceed
    ``max_batch_tokens``.

    Decoder-only models whose decoding is plain greedy run :func:`sftkit.decoding.greedy_decode`
    (rows leave the batch when they stop, waiting prompts take their places); encoder-decoders run
    :func:`sftkit.generate_seq2seq.generate_seq2seq`; others run ``model.generate`` batch by batch.
    With ``share_prefix``, the tokens every prompt starts with (the template and a constant
    instruction, often most of an evaluation prompt) are run through the model once, and each
    prompt continues from that KV cache."""
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):  # T5, BART: sftkit.generate_seq2seq
        from sftkit.generate_seq2seq import generate_seq2seq

        return generate_seq2seq(model, tokenizer, prompt_ids, stops, max_new_tokens=max_new_tokens,
                                batch_size=batch_size, max_batch_tokens=max_batch_tokens, progress=progress,
                                description=description, sort_by_length=sort_by_length)
    from sftkit import decoding

    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be at least 1")
    encoded = [list(ids) for ids in prompt_ids]
    decode = _decode_loop if decoding.supports(model) else _decode_with_generate
    with _progress_bar(progress, description, len(encoded)) as advance:
        return decode(model, tokenizer, encoded, stops, max_new_tokens=max_new_tokens, batch_size=batch_size,
                      max_batch_tokens=max_batch_tokens, sort_by_length=sort_by_length,
                      share_prefix=share_prefix, advance=advance)


@contextmanager
def _progress_bar(progress: bool, description: str, total: int):
    """A transient progress bar over the prompts; yields ``advance(n)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sftkit.console import err_console, progress_disabled

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err_console, disable=not progress or progress_disabled(), transient=True)
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def _pad_id(tokenizer: Any, stops: Stops) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops.eos_ids or (0,))[0]


def _shared_prefix(encoded: list[list[int]], share_prefix: bool) -> int:
    shared = shared_prefix_length(encoded) if share_prefix and len(encoded) > 1 else 0
    return shared if shared >= MIN_SHARED_PREFIX else 0


def _decode_loop(model: Any, tokenizer: Any, encoded: list[list[int]], stops: Stops, *, max_new_tokens: int,
                 batch_size: int, max_batch_tokens: int | None, sort_by_length: bool, share_prefix: bool,
                 advance: Callable) -> list[Generation]:
    from sftkit.decoding import greedy_decode

    results: list[Generation | None] = [None] * len(encoded)
    order = list(range(len(encoded)))
    if sort_by_length:
        order.sort(key=lambda i: -len(encoded[i]))  # longest first: a memory problem shows at once

    def stopped_by_text(ids: list[int]) -> bool:
        text = tokenizer.decode(ids, skip_special_tokens=True)
        return any(stop in text for stop in stops.strings)

    def done(index: int, new_ids: list[int]) -> None:
        results[index] = _finish(tokenizer, new_ids, stops, max_new_tokens)
        advance()

    model.eval()
    greedy_decode(model, encoded, pad_id=_pad_id(tokenizer, stops), stop_ids=stops.token_ids,
                  stopped_by_text=stopped_by_text if stops.strings else None, max_new_tokens=max_new_tokens,
                  batch_size=batch_size, max_batch_tokens=max_batch_tokens, order=order,
                  shared=_shared_prefix(encoded, share_prefix), done=done)
    return [r for r in results if r is not None]


def _decode_with_generate(model: Any, tokenizer: Any, encoded: list[list[int]], stops: Stops, *,
                          max_new_tokens: int, batch_size: int, max_batch_tokens: int | None,
                          sort_by_length: bool, share_prefix: bool, advance: Callable) -> list[Generation]:
    """``model.generate`` batch by batch (left padding, the shared-prefix cache copied into each)."""
    import torch

    options = dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=_pad_id(tokenizer, stops),
                   eos_token_id=list(stops.token_ids) or None, temperature=None, top_p=None, top_k=None)
    if stops.strings:
        options.update(stop_strings=list(stops.strings), tokenizer=tokenizer)
    results: list[Generation | None] = [None] * len(encoded)
    model.eval()
    shared = _shared_prefix(encoded, share_prefix)
    # the same bound as the decode loop: rows x (padded prompt + max_new_tokens) tokens of KV cache
    batches = make_batches([len(ids) + max_new_tokens for ids in encoded], batch_size, max_batch_tokens,
                           sort_by_length)
    with left_padding(tokenizer), torch.inference_mode():
        prefix_cache = None
        if shared:
            prefix = torch.tensor([encoded[0][:shared]], device=model.device)
            prefix_cache = model(input_ids=prefix, use_cache=True).past_key_values
        for batch in batches:
            padded = tokenizer.pad({"input_ids": [encoded[i][shared:] for i in batch]}, return_tensors="pt")
            input_ids, mask = padded["input_ids"], padded["attention_mask"]
            extra = {}
            if prefix_cache is not None:
                # [shared prefix][left padding][own tokens]: the mask hides the padding, and
                # positions come from the mask, so each prompt sees exactly its own tokens.
                input_ids = torch.cat([torch.tensor([encoded[batch[0]][:shared]] * len(batch)), input_ids], dim=1)
                mask = torch.cat([torch.ones(len(batch), shared, dtype=mask.dtype), mask], dim=1)
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(batch))
                extra["past_key_values"] = cache
            output = model.generate(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                                    **options, **extra)
            width = input_ids.shape[1]
            for row, index in enumerate(batch):
                results[index] = _finish(tokenizer, output[row, width:].tolist(), stops, max_new_tokens)
            advance(len(batch))
    return [r for r in results if r is not None]


# -- for generator plugins (sftkit.hookspecs.register_generators) ---------------------------------

def finish(tokenizer: Any, new_ids: Sequence[int], stops: Stops, max_new_tokens: int) -> Generation:
    """A ``Generation`` from one prompt's new token ids: cut before the first stop id or stop
    string, with why it stopped (what every generator returns per prompt)."""
    return _finish(tokenizer, new_ids, stops, max_new_tokens)


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are, for a generator that loads them itself (``loads_model``):
    ``name`` as the user gave it, the model to load (``base_model``: the run's base, or the
    model itself), a LoRA ``adapter`` folder or None, and the ``device`` and ``dtype`` asked for."""

    name: str
    base_model: str
    adapter: str | None = None
    device: str = "cpu"
    dtype: str | None = None
    trust_remote_code: bool = False
