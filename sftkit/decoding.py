"""Greedy decoding for decoder-only models in a batch whose rows leave when they stop and
whose free places are filled from the waiting prompts (continuous batching).

``model.generate`` keeps every row of a batch until its longest answer ends, concatenates the
whole KV cache at every step, and starts a new batch only when the last one is done. Here:

- prompts join in groups (longest first): one batched prefill, left-padded, with the attention
  mask and positions derived from it (as ``generate`` does), from the shared-prefix cache when
  every prompt starts with the same tokens;
- each step runs one forward on the rows still running: a row that stops (a stop token, a stop
  text, ``max_new_tokens``) leaves at once; the last row moves into its place, so leaving
  copies one row, not the cache;
- the KV cache is a transformers ``DynamicCache`` whose layers write into buffers allocated
  for the batch (a slot per row, room for ``max_new_tokens`` more positions) instead of
  concatenating at each step; columns no running row uses any more are cut off (a view).

The arithmetic of a row is that of ``model.generate``: the same masked attention over its own
tokens, positions counted from its first real token, argmax over the same logits.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

# generation-config settings that change which token greedy decoding picks (or how it runs):
# a model that sets one keeps model.generate
_CHANGES_GREEDY = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "guidance_scale": 1.0,
    "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "min_length": 0, "min_new_tokens": 0,
    "bad_words_ids": None, "sequence_bias": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "watermarking_config": None, "prompt_lookup_num_tokens": None, "assistant_early_exit": None,
    "token_healing": False,
}


# A prefill call costs about as much as this many more prompt tokens (measured on CPU with
# SmolLM2-135M): a prompt joins a prefill chunk when its padding there is at most this.
PADDING_PER_CALL = 32
# A prompt waits rather than join a batch that would pad it by more than this many positions:
# every step reads each row's whole padded cache (one 1,363-token prompt among short ones made
# every row read 1,400 positions).
MAX_JOIN_PADDING = 512


def supports(model: Any) -> bool:
    """Whether this loop can decode for ``model``: a decoder-only transformers model whose
    cache layers are all plain ``DynamicLayer`` (no sliding window, no recurrent state), the
    stock ``generate``, and a generation config that leaves greedy decoding plain."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    try:
        from transformers import DynamicCache, GenerationMixin
        from transformers.cache_utils import DynamicLayer

        layers = DynamicCache(config=config).layers
    except (ImportError, AttributeError, TypeError, ValueError, KeyError):
        return False
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return False
    if getattr(type(model), "generate", None) is not GenerationMixin.generate:
        return False
    settings = getattr(model, "generation_config", None)
    for name, plain in _CHANGES_GREEDY.items():
        value = getattr(settings, name, plain)
        if value not in (plain, None) and not (plain == 0 and value == 0):
            return False
    return True


def _slot_layer_class():
    from transformers.cache_utils import DynamicLayer

    class SlotLayer(DynamicLayer):
        """One layer's keys and values in buffers of (rows, heads, capacity, dim): running rows
        are slots ``0..rows-1``, positions ``start..length-1`` are in use, written in place."""

        def __init__(self, keys, values):
            super().__init__()
            self.key_buffer, self.value_buffer = keys, values
            self.device = keys.device
            self.is_initialized = True
            self.rows = self.start = self.length = 0
            self.refresh()

        def refresh(self) -> None:
            self.keys = self.key_buffer[: self.rows, :, self.start:self.length]
            self.values = self.value_buffer[: self.rows, :, self.start:self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            end = self.length + key_states.shape[-2]
            self.key_buffer[: self.rows, :, self.length:end] = key_states
            self.value_buffer[: self.rows, :, self.length:end] = value_states
            self.length = end
            self.refresh()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length - self.start

    return SlotLayer


@dataclass
class Row:
    """A prompt being decoded: its index, the tokens generated so far."""

    index: int
    tokens: list[int] = field(default_factory=list)


class Batch:
    """The running rows: their KV cache (a DynamicCache of slot layers), attention mask,
    next positions and last tokens, all in buffers with one slot per row."""

    def __init__(self, model: Any, slots: int, room: int):
        from transformers import DynamicCache

        self.model, self.slots, self.room = model, slots, room
        self.cache = DynamicCache()
        self.cache.layer_class_to_replicate = None
        self.rows: list[Row] = []
        self.capacity = self.start = self.length = 0
        self.mask = self.positions = self.last = None

    # -- the shape -----------------------------------------------------------------------------

    @property
    def width(self) -> int:
        """Positions in use (the longest running row, padding included)."""
        return self.length - self.start

    def _allocate(self, width: int, like: Sequence[Any]) -> None:
        """Fresh buffers holding ``width`` positions plus room, the running rows copied right-aligned."""
        import torch

        layer_class = _slot_layer_class()
        capacity = width + self.room
        old_layers = self.cache.layers
        layers = []
        for index, (keys, values) in enumerate(like):
            shape = (self.slots, keys.shape[1], capacity, keys.shape[3])
            layer = layer_class(keys.new_zeros(shape), values.new_zeros(shape))
            if self.rows:
                old = old_layers[index]
                layer.key_buffer[: len(self.rows), :, width - self.width:width] = old.keys
                layer.value_buffer[: len(self.rows), :, width - self.width:width] = old.values
            layers.append(layer)
        mask = torch.zeros(self.slots, capacity, dtype=torch.long, device=like[0][0].device)
        if self.rows:
            mask[: len(self.rows), width - self.width:width] = self.mask[: len(self.rows), self.start:self.length]
        else:
            self.positions = torch.zeros(self.slots, dtype=torch.long, device=mask.device)
            self.last = torch.zeros(self.slots, dtype=torch.long, device=mask.device)
        self.cache.layers = layers
        self.mask, self.capacity, self.start, self.length = mask, capacity, 0, width
        self._sync()

    def _sync(self) -> None:
        for layer in self.cache.layers:
            layer.rows, layer.start, layer.length = len(self.rows), self.start, self.length
            layer.refresh()

    # -- rows join and leave ---------------------------------------------------------------------

    def join(self, rows: list[Row], kv: Sequence[tuple[Any, Any]], mask: Any, positions: Any, first: Any) -> None:
        """Add prefilled rows: their per-layer keys/values (k, heads, n, dim), mask (k, n), next
        positions and first generated tokens."""
        width = mask.shape[1]
        if not self.rows or self.length + self.room > self.capacity or width > self.length:
            self._allocate(max(width, self.width if self.rows else 0), kv)
        begin, end = len(self.rows), len(self.rows) + len(rows)
        for layer, (keys, values) in zip(self.cache.layers, kv):
            layer.key_buffer[begin:end, :, self.length - width:self.length] = keys
            layer.value_buffer[begin:end, :, self.length - width:self.length] = values
        self.mask[begin:end] = 0
        self.mask[begin:end, self.length - width:self.length] = mask
        self.positions[begin:end] = positions
        self.last[begin:end] = first
        self.start = min(self.start, self.length - width)
        self.rows.extend(rows)
        self._sync()

    def leave(self, slots: Sequence[int]) -> None:
        """Remove the rows in ``slots``: the last running row moves into each freed slot; then
        the leading columns no running row uses are cut off."""
        for slot in sorted(slots, reverse=True):
            last = len(self.rows) - 1
            if slot != last:
                for layer in self.cache.layers:
                    layer.key_buffer[slot, :, self.start:self.length] = layer.key_buffer[last, :, self.start:self.length]
                    layer.value_buffer[slot, :, self.start:self.length] = \
                        layer.value_buffer[last, :, self.start:self.length]
                self.mask[slot] = self.mask[last]
                self.positions[slot] = self.positions[last]
                self.last[slot] = self.last[last]
                self.rows[slot] = self.rows[last]
            self.rows.pop()
        if self.rows:
            used = self.mask[: len(self.rows), self.start:self.length].any(dim=0).nonzero()
            self.start += int(used[0]) if len(used) else self.width
        self._sync()

    # -- one step --------------------------------------------------------------------------------

    def step(self, forward: Callable) -> list[int]:
        """Feed each running row its last token; returns the next token of each row."""
        n = len(self.rows)
        self.mask[:n, self.length] = 1
        logits = forward(input_ids=self.last[:n, None], attention_mask=self.mask[:n, self.start:self.length + 1],
                         position_ids=self.positions[:n, None], cache=self.cache)
        self.length += 1  # each layer wrote the new position in place
        chosen = logits[:, -1].argmax(dim=-1)
        self.last[:n] = chosen
        self.positions[:n] += 1
        return chosen.tolist()


def _forward_function(model: Any) -> Callable:
    """``model(...)`` with the cache under the name this transformers version takes, and only
    the last position's logits where the model allows it."""
    parameters = inspect.signature(type(model).forward).parameters
    cache_name = "cache" if "cache" in parameters else "past_key_values"
    keep = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}

    def forward(*, input_ids, attention_mask, position_ids, cache):
        output = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=True, **{cache_name: cache}, **keep)
        return output.logits

    return forward


def greedy_decode(model: Any, encoded: Sequence[Sequence[int]], *, pad_id: int, stop_ids: Sequence[int],
                  stopped_by_text: Callable[[list[int]], bool] | None, max_new_tokens: int, batch_size: int,
                  max_batch_tokens: int | None, order: Sequence[int], shared: int,
                  done: Callable[[int, list[int]], None]) -> None:
    """Decode every prompt of ``encoded`` greedily, calling ``done(index, new_tokens)`` as each
    stops (its new tokens end with the stop token, if one stopped it).

    Prompts join in ``order``, at most ``batch_size`` rows at a time, and only while the
    running rows' padded width plus the room to generate, times their count, stays within
    ``max_batch_tokens`` (a prompt joins an empty batch in any case). ``shared``: the number of
    leading tokens every prompt has in common, run once."""
    import torch

    device = model.device
    forward = _forward_function(model)
    stops = set(stop_ids)
    waiting = list(order)[::-1]  # pop() takes the next
    refill_at = max(1, batch_size // 4)  # a prefill of a few rows at a time, not one by one
    batch = Batch(model, batch_size, room=max_new_tokens)

    def fits(count: int, width: int) -> bool:
        return max_batch_tokens is None or count * (width + max_new_tokens) <= max_batch_tokens

    def admit() -> None:
        """Prefill the next waiting prompts that fit and add them: in chunks of similar length,
        since a prompt padded by more than ``PADDING_PER_CALL`` tokens costs more than a call."""
        group: list[int] = []
        width = batch.width if batch.rows else 0
        while waiting and len(batch.rows) + len(group) < batch_size:
            candidate = len(encoded[waiting[-1]])
            if (batch.rows or group) and (width - candidate > MAX_JOIN_PADDING or
                                          not fits(len(batch.rows) + len(group) + 1, max(width, candidate))):
                break
            group.append(waiting.pop())
            width = max(width, candidate)
        chunks: list[list[int]] = []
        for index in group:  # longest first: a chunk's first prompt is its longest
            if chunks and len(encoded[chunks[-1][0]]) - len(encoded[index]) <= PADDING_PER_CALL:
                chunks[-1].append(index)
            else:
                chunks.append([index])
        for chunk in chunks:
            prefill(chunk)

    def prefill(chunk: list[int]) -> None:
        """Run one left-padded prefill for ``chunk`` and add its rows to the batch."""
        own = [list(encoded[i][shared:]) for i in chunk]
        longest = max(len(ids) for ids in own)
        input_ids = torch.tensor([[pad_id] * (longest - len(ids)) + ids for ids in own], device=device)
        mask = torch.tensor([[0] * (longest - len(ids)) + [1] * len(ids) for ids in own], device=device)
        if prefix_cache is not None:
            mask = torch.cat([torch.ones(len(chunk), shared, dtype=mask.dtype, device=device), mask], dim=1)
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(chunk))
        else:
            from transformers import DynamicCache

            cache = DynamicCache()
        # positions as generate derives them: counted from each row's first real token
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        logits = forward(input_ids=input_ids, attention_mask=mask, position_ids=positions[:, shared:], cache=cache)
        first = logits[:, -1].argmax(dim=-1)
        rows = [Row(index) for index in chunk]
        batch.join(rows, [(layer.keys, layer.values) for layer in cache.layers], mask, mask.sum(dim=1), first)
        record(list(range(len(batch.rows) - len(rows), len(batch.rows))), first.tolist())

    def record(slots: list[int], tokens: list[int]) -> None:
        """Append each slot's new token; rows that stop leave the batch."""
        finished = []
        for slot, token in zip(slots, tokens):
            row = batch.rows[slot]
            row.tokens.append(token)
            if token in stops or len(row.tokens) >= max_new_tokens or (
                    stopped_by_text is not None and stopped_by_text(row.tokens)):
                finished.append(slot)
        for slot in finished:
            done(batch.rows[slot].index, batch.rows[slot].tokens)
        if finished:
            batch.leave(finished)

    with torch.inference_mode():
        prefix_cache = None
        if shared:
            from transformers import DynamicCache

            prefix_cache = DynamicCache()
            forward(input_ids=torch.tensor([list(encoded[order[0]][:shared])], device=device),
                    attention_mask=torch.ones(1, shared, dtype=torch.long, device=device),
                    position_ids=torch.arange(shared, device=device)[None], cache=prefix_cache)
        while waiting or batch.rows:
            if waiting and (not batch.rows or batch_size - len(batch.rows) >= min(refill_at, len(waiting))):
                before = len(waiting)
                admit()
                if len(waiting) < before:
                    continue  # rows that stopped at their first token may free more places
            if batch.rows:
                record(list(range(len(batch.rows))), batch.step(forward))
