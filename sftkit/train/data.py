"""Training data: sftkit's own input_ids/labels/weights, a seeded mixing order, and batches.

Examples are encoded once by the same ``Encoder`` that ``preview`` and ``validate`` use, so
what trains is what was previewed. Each example becomes a ``Sample``: its token ids and the
positions whose next token trains (with the target ids and loss weights). A batch is either
*packed* (padding-free: the examples of a micro-batch concatenated into one row, position
ids restarting at 0 and attention kept inside each example) or *padded* (right-padded to
the longest example of the micro-batch).

A source's samples are any sequence of ``Sample``: the memory-mapped Arrow cache of
``sftkit.train.cache`` (int32 columns, read on demand) or a list; the mixing order is a numpy
array, so a million examples cost a few megabytes here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from sftkit.tokenize import IGNORE_INDEX
from sftkit.types import TokenizedExample


@dataclass
class Sample:
    """One encoded example ready for the loss: ids, and where and what it is trained on."""

    input_ids: np.ndarray  # int64 or int32 [length]
    source: np.ndarray  # int64 or int32: positions whose hidden state predicts a trained token (t - 1)
    target: np.ndarray  # int64 or int32: the trained token ids (labels[t])
    weight: np.ndarray  # float32 the loss weight of each trained token

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])


def to_sample(tokenized: TokenizedExample) -> Sample:
    """A TokenizedExample as a Sample (labels shift by one: position t-1 predicts token t).

    Encoder-decoder: ``input_ids`` are the encoder input, ``target`` the whole decoder target
    (decoder position k predicts target token k from the start token and the target tokens
    before it), ``source`` = 0..len(target)-1 and ``weight`` the target's weights; a target
    without a trained token gives an empty sample (dropped)."""
    if tokenized.is_encoder_decoder:
        split = tokenized.source_length
        target = np.asarray(tokenized.input_ids[split:], dtype=np.int64)
        weight = np.asarray(tokenized.weights[split:], dtype=np.float32)
        if not (weight > 0).any():
            target, weight = target[:0], weight[:0]
        return Sample(np.asarray(tokenized.input_ids[:split], dtype=np.int64), np.arange(len(target), dtype=np.int64),
                      target, weight)
    labels = np.asarray(tokenized.labels, dtype=np.int64)
    weights = np.asarray(tokenized.weights, dtype=np.float32)
    trained = np.nonzero(labels[1:] != IGNORE_INDEX)[0] + 1
    return Sample(np.asarray(tokenized.input_ids, dtype=np.int64), trained - 1, labels[trained], weights[trained])


@dataclass
class Source:
    """One training file: its samples and its mixing weight."""

    name: str
    samples: Sequence[Sample]
    weight: float = 1.0
    stats: dict[str, Any] = field(default_factory=dict)


def epoch_order(sources: Sequence[Source], seed: int, epoch: int) -> list[tuple[int, int]]:
    """The (source, index) order of one epoch, seeded by (seed, epoch).

    Source ``i`` contributes ``round(weight_i * size_i)`` examples per epoch (weight 2 shows each
    example twice, 0.5 half of them), drawn without replacement, then all are shuffled together.
    """
    return [(int(s), int(i)) for s, i in epoch_array(sources, seed, epoch)]


def _count(source: Source) -> int:
    size = len(source.samples)
    return max(1, round(source.weight * size)) if size else 0


def epoch_array(sources: Sequence[Source], seed: int, epoch: int) -> np.ndarray:
    """``epoch_order`` as an int64 array of shape [examples, 2] (source, index)."""
    rng = np.random.default_rng([seed, epoch])
    parts = [np.zeros((0, 2), dtype=np.int64)]
    for index, source in enumerate(sources):
        size, count = len(source.samples), _count(source)
        if not size:
            continue
        picks = np.concatenate([rng.permutation(size) for _ in range(math.ceil(count / size))])[:count]
        parts.append(np.stack([np.full(count, index, dtype=np.int64), picks.astype(np.int64)], axis=1))
    order = np.concatenate(parts)
    return order[rng.permutation(len(order))]


class Schedule:
    """Which examples each optimizer step uses, on each process: a pure function of the seed.

    The examples form one stream, epoch after epoch; step ``k`` takes the next
    ``batch_size * grad_accum * world`` of them, micro-batch ``a`` of rank ``r`` being chunk
    ``a * world + r``. Resuming at step ``k`` therefore sees exactly the data it would have seen.
    """

    def __init__(self, sources: Sequence[Source], *, batch_size: int, grad_accum: int = 1, world: int = 1,
                 seed: int = 0) -> None:
        self.sources = list(sources)
        self.batch_size, self.grad_accum, self.world, self.seed = batch_size, grad_accum, world, seed
        self.epoch_size = sum(_count(s) for s in self.sources)
        self._cache: dict[int, np.ndarray] = {}

    @property
    def per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.world

    def steps_for(self, epochs: float) -> int:
        """Optimizer steps in ``epochs`` epochs (at least 1)."""
        return max(1, math.ceil(epochs * self.epoch_size / self.per_step))

    def epoch_at(self, step: int) -> float:
        """Epochs consumed after ``step`` steps."""
        return step * self.per_step / max(1, self.epoch_size)

    def _item(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(position, self.epoch_size)
        if epoch not in self._cache:
            self._cache = {epoch: epoch_array(self.sources, self.seed, epoch)}
        source, index = self._cache[epoch][offset]
        return int(source), int(index)

    def micro_batches(self, step: int, rank: int = 0) -> list[list[Sample]]:
        """The micro-batches (lists of samples) of ``step`` for process ``rank``."""
        start = step * self.per_step
        out = []
        for accum in range(self.grad_accum):
            chunk = accum * self.world + rank
            first = start + chunk * self.batch_size
            items = [self._item(p) for p in range(first, first + self.batch_size)]
            out.append([self.sources[s].samples[i] for s, i in items])
        return out


def split_by_tokens(samples: Sequence[Sample], budget: int | None) -> list[list[Sample]]:
    """Consecutive groups of samples holding at most ``budget`` tokens each (one sample at least).

    A micro-batch runs as several forward/backward passes whose gradients add up: the same
    step, with activation memory bounded by the budget instead of the batch.
    """
    if not budget:
        return [list(samples)]
    groups: list[list[Sample]] = [[]]
    used = 0
    for sample in samples:
        if groups[-1] and used + sample.length > budget:
            groups.append([])
            used = 0
        groups[-1].append(sample)
        used += sample.length
    return groups


def collate_seq2seq(samples: Sequence[Sample], *, pad_id: int, start_id: int) -> dict[str, Any]:
    """Tensors for one micro-batch of an encoder-decoder model, padded per side (never packed):
    ``input_ids``/``attention_mask`` (the encoder input, right-padded), ``decoder_input_ids``
    (the start token, then the target shifted right by one) with ``decoder_attention_mask``, and
    ``source`` (flat indices into the [batch * target length] decoder states), ``target``, ``weight``."""
    import torch

    def padded(rows: list[np.ndarray]) -> tuple[Any, Any]:
        width = max(1, max(len(r) for r in rows))
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for index, row in enumerate(rows):
            ids[index, : len(row)] = row
            mask[index, : len(row)] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)

    input_ids, attention_mask = padded([s.input_ids.astype(np.int64) for s in samples])
    decoder_rows = [np.concatenate([[start_id], s.target[:-1].astype(np.int64)]) for s in samples]
    decoder_ids, decoder_mask = padded(decoder_rows)
    width = decoder_ids.shape[1]
    source = np.concatenate([s.source.astype(np.int64) + row * width for row, s in enumerate(samples)])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": None, "bounds": None,
            "decoder_input_ids": decoder_ids, "decoder_attention_mask": decoder_mask,
            "source": torch.from_numpy(np.ascontiguousarray(source)),
            "target": torch.from_numpy(np.ascontiguousarray(np.concatenate([s.target for s in samples]), dtype=np.int64)),
            "weight": torch.from_numpy(np.ascontiguousarray(np.concatenate([s.weight for s in samples]),
                                                            dtype=np.float32)),
            "tokens": int(attention_mask.sum() + decoder_mask.sum())}


def collate(samples: Sequence[Sample], *, packed: bool, pad_id: int) -> dict[str, Any]:
    """Tensors for one micro-batch.

    Both forms give ``source`` (flat indices into the [batch * length] hidden states whose next
    token trains), ``target`` and ``weight``. Packed: one row, ``position_ids`` restarting per
    example, and each example's bounds twice: ``bounds`` [(start, end), ...] (sftkit's CPU
    kernel) and ``cu_seq_lens`` (int32 [0, end_1, end_2, ...]) with ``max_length`` (flash
    attention's varlen path). Padded: ``attention_mask`` and right padding.
    """
    import torch

    def tensor(array: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))

    lengths = [s.length for s in samples]
    if packed:
        offsets = np.cumsum([0] + lengths)
        ids = np.concatenate([s.input_ids for s in samples])
        positions = np.concatenate([np.arange(n) for n in lengths])
        source = np.concatenate([s.source.astype(np.int64) + off for s, off in zip(samples, offsets)])
        batch = {
            "input_ids": tensor(ids)[None],
            "position_ids": tensor(positions)[None],
            "attention_mask": None,
            "bounds": [(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])],
            "cu_seq_lens": torch.from_numpy(offsets.astype(np.int32)),
            "max_length": int(max(lengths)),
        }
        tokens = int(ids.shape[0])
    else:
        width = max(lengths)
        ids = np.full((len(samples), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(samples), width), dtype=np.int64)
        for row, s in enumerate(samples):
            ids[row, : s.length] = s.input_ids
            mask[row, : s.length] = 1
        source = np.concatenate([s.source.astype(np.int64) + row * width for row, s in enumerate(samples)])
        batch = {"input_ids": torch.from_numpy(ids), "position_ids": None,
                 "attention_mask": torch.from_numpy(mask), "bounds": None}
        tokens = int(mask.sum())
    batch["source"] = tensor(source)
    batch["target"] = tensor(np.concatenate([s.target for s in samples]))
    batch["weight"] = torch.from_numpy(np.ascontiguousarray(np.concatenate([s.weight for s in samples]),
                                                            dtype=np.float32))
    batch["tokens"] = tokens
    return batch
