"""The loss on trained positions only: hidden states gathered where the next token trains.

Only those positions go through the LM head, so no full-vocabulary logits are computed for
masked prompt tokens. The loss is the same math as TRL's (mean cross-entropy over trained
tokens, weighted per token for ``prompt_weighted`` masking).
"""
from __future__ import annotations

from typing import Any


def model_parts(model: Any) -> tuple[Any, Any]:
    """``(decoder, lm_head)`` of a causal LM, PEFT-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def make_loss_module(model: Any) -> Any:
    """An ``nn.Module`` whose forward returns (sum of weighted token losses, sum of weights)."""
    import torch

    class _LossModule(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, source, target, weight, position_ids=None, attention_mask=None, bounds=None):
            decoder, head = model_parts(self.inner)
            extra = {"sftkit_bounds": bounds} if bounds is not None else {}
            hidden = decoder(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                             use_cache=False, **extra).last_hidden_state
            picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, source)
            logits = head(picked).float()
            losses = torch.nn.functional.cross_entropy(logits, target, reduction="none")
            return (losses * weight).sum(), weight.sum()

    return _LossModule(model)


def batch_inputs(batch: dict, device: Any) -> dict:
    """The tensors of a collated batch on ``device`` (keyword arguments of the loss module)."""
    out = {}
    for key in ("input_ids", "source", "target", "weight", "position_ids", "attention_mask"):
        value = batch[key]
        out[key] = value.to(device) if value is not None else None
    out["bounds"] = batch["bounds"]
    return out
