"""Batched greedy generation for encoder-decoder models (T5, BART): the prompt is the encoder
input, the model's own ``generate`` writes the decoder side.

``sftkit.generate.generate_ids`` hands an encoder-decoder model here, with the same prompts
(tokenized as in training), the same stops and the same ``Generation`` results: batches of
prompts of similar length (at most ``batch_size`` prompts and ``max_batch_tokens`` padded
prompt tokens), right-padded (the attention mask hides the padding from the encoder), decoded
greedily; the decoder's start token is dropped and each output cut before its stop. There is
no shared-prefix cache: each prompt is encoded whole.
"""
from __future__ import annotations

from typing import Any, Sequence


def generate_seq2seq(model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], stops: Any, *,
                     max_new_tokens: int = 64, batch_size: int = 16, max_batch_tokens: int | None = 4096,
                     progress: bool = True, description: str = "generating", sort_by_length: bool = True) -> list:
    """Greedy outputs (``sftkit.generate.Generation``) of an encoder-decoder model for already
    tokenized prompts (encoder inputs), in their order."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sftkit.console import err_console, progress_disabled
    from sftkit.generate import _finish, make_batches

    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be at least 1")
    encoded = [list(ids) for ids in prompt_ids]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops.eos_ids or (0,))[0]
    options = {"max_new_tokens": max_new_tokens, "do_sample": False, "num_beams": 1, "pad_token_id": pad_id,
               "eos_token_id": list(stops.token_ids) or None, "temperature": None, "top_p": None, "top_k": None}
    if stops.strings:
        options.update(stop_strings=list(stops.strings), tokenizer=tokenizer)
    results: list = [None] * len(encoded)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err_console, disable=not progress or progress_disabled(), transient=True)
    model.eval()
    batches = make_batches([len(ids) for ids in encoded], batch_size, max_batch_tokens, sort_by_length)
    with bar, torch.inference_mode():
        task = bar.add_task(description, total=len(encoded))
        for batch in batches:
            width = max(1, max(len(encoded[i]) for i in batch))
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, index in enumerate(batch):
                input_ids[row, : len(encoded[index])] = torch.tensor(encoded[index], dtype=torch.long)
                mask[row, : len(encoded[index])] = 1
            output = model.generate(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                                    **options)
            for row, index in enumerate(batch):  # position 0 is the decoder's start token
                results[index] = _finish(tokenizer, output[row, 1:].tolist(), stops, max_new_tokens)
            bar.advance(task, len(batch))
    return results
