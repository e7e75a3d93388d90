"""The loss on trained positions only: hidden states gathered where the next token trains.

Only those positions go through the LM head, so no full-vocabulary logits are computed for
masked prompt tokens. The loss is the same math as TRL's (mean cross-entropy over trained
tokens, weighted per token for ``prompt_weighted`` masking). What a model's own ``forward``
does to its logits after the head (Gemma's final soft-capping, Granite's and Cohere's logit
scaling) is done here too.
"""
from __future__ import annotations

from typing import Any

FLASH_KERNELS = ("flash_attention_2", "flash_attention_3")


def model_parts(model: Any) -> tuple[Any, Any]:
    """``(decoder, lm_head)`` of a causal LM, PEFT-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def logits_transform(config: Any) -> Any:
    """What the model's own forward applies to the head's output (None when nothing)."""
    import torch

    cap = getattr(config, "final_logit_softcapping", None)
    divide = getattr(config, "logits_scaling", None)  # Granite
    multiply = getattr(config, "logit_scale", None) if getattr(config, "model_type", "") == "cohere" else None
    if not (cap or divide or multiply):
        return None

    def transform(logits):
        if multiply:
            logits = logits * multiply
        if divide:
            logits = logits / divide
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return transform


def make_loss_module(model: Any) -> Any:
    """An ``nn.Module`` whose forward returns (sum of weighted token losses, sum of weights).

    An encoder-decoder model (``config.is_encoder_decoder``) runs its own forward on the encoder
    input and the shifted target (``sftkit.train.data.collate_seq2seq``): its logits at the
    target positions, whatever it does to them (T5 rescales before its head), give the loss.

    It carries the wrapped model's ``_no_split_modules`` (FSDP wraps each decoder layer, not
    the whole model as one unit) and its quantization markers (accelerate then leaves a 4-bit
    or 8-bit model where it was loaded).
    """
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model

    class _LossModule(torch.nn.Module):
        _no_split_modules = list(getattr(base, "_no_split_modules", None) or [])
        is_loaded_in_4bit = bool(getattr(base, "is_loaded_in_4bit", False))
        is_loaded_in_8bit = bool(getattr(base, "is_loaded_in_8bit", False))

        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            if getattr(base, "hf_device_map", None):
                self.hf_device_map = base.hf_device_map
            self.transform = logits_transform(base.config)

        def forward(self, input_ids, source, target, weight, position_ids=None, attention_mask=None, bounds=None,
                    **attention_inputs):
            if "decoder_input_ids" in attention_inputs:  # an encoder-decoder model
                logits = self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                                    **attention_inputs).logits
                picked = logits.reshape(-1, logits.shape[-1]).index_select(0, source).float()
                losses = torch.nn.functional.cross_entropy(picked, target, reduction="none")
                return (losses * weight).sum(), weight.sum()
            decoder, head = model_parts(self.inner)
            extra = dict(attention_inputs)
            if bounds is not None:
                extra["sftkit_bounds"] = bounds
            hidden = decoder(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                             use_cache=False, **extra).last_hidden_state
            picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, source)
            logits = head(picked).float()
            if self.transform is not None:
                logits = self.transform(logits)
            losses = torch.nn.functional.cross_entropy(logits, target, reduction="none")
            return (losses * weight).sum(), weight.sum()

    return _LossModule(model)


def batch_inputs(batch: dict, device: Any, kernel: str = "sftkit") -> dict:
    """The tensors of a collated batch on ``device`` (keyword arguments of the loss module).

    A packed batch carries what its attention kernel needs to keep examples apart: the bounds
    for sftkit's CPU kernel, ``cu_seq_lens_q/k`` and ``max_length_q/k`` for flash attention's
    varlen path, and only the restarting position ids for flex attention.
    """
    out = {}
    keys = ("input_ids", "source", "target", "weight", "position_ids", "attention_mask")
    for key in keys + tuple(k for k in ("decoder_input_ids", "decoder_attention_mask") if k in batch):
        value = batch[key]
        out[key] = value.to(device, non_blocking=True) if value is not None else None
    out["target"] = out["target"].long()
    packed = batch.get("bounds") is not None
    out["bounds"] = batch["bounds"] if packed and kernel == "sftkit" else None
    if packed and kernel in FLASH_KERNELS:
        lengths = batch["cu_seq_lens"].to(device, non_blocking=True)
        out.update(cu_seq_lens_q=lengths, cu_seq_lens_k=lengths, max_length_q=batch["max_length"],
                   max_length_k=batch["max_length"])
    return out
