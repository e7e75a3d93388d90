"""Attention kept inside each packed example: a transformers attention function of sftkit's own.

A packed row holds several examples back to back (position ids restart at 0 for each); the
kernel computes causal attention separately on each example, so no token attends to another
example, and the cost is the sum of the squared example lengths, not the square of the row.
"""
from __future__ import annotations

from typing import Any

PACKED_ATTENTION = "sftkit_packed"


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     sftkit_bounds=None, **kwargs):
    """Causal attention run separately on each packed example (``sftkit_bounds`` = [(start, end)]).

    Without bounds (generation, padded batches) it is plain SDPA.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if sftkit_bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    pieces = [torch.nn.functional.scaled_dot_product_attention(
        query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout_p=dropout, scale=scaling, is_causal=True)
        for s, e in sftkit_bounds]
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous(), None


def use_packed_attention(model: Any) -> bool:
    """Switch a transformers model to ``packed_attention``; False when it cannot be switched."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    try:
        model.set_attn_implementation(PACKED_ATTENTION)
    except (ValueError, AttributeError, NotImplementedError):
        return False
    return True
