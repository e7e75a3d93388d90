"""Attention kept inside each packed example, on every device.

A packed row holds several examples back to back (position ids restart at 0 for each). Which
kernel computes it (``choose_kernel``):

- on CUDA, transformers' own varlen paths: ``flash_attention_3`` / ``flash_attention_2`` when
  flash-attn is installed (the collator passes ``cu_seq_lens_q/k`` and ``max_length_q/k``, so
  the kernel sees each example's bounds without a device sync), else ``flex_attention`` with
  the block-diagonal causal mask transformers builds from the restarting position ids; both
  honour sliding windows, soft-capping and attention sinks themselves;
- on CPU, ``sftkit``: ``packed_attention`` below, causal SDPA on each example in turn (SDPA's
  own grouped-query support, no repeated K/V). It implements sliding windows and refuses, with
  ``UnsupportedAttention``, every other argument it does not implement (soft-capping, sinks,
  ...). ``use_kernel`` runs a four-token probe first, so such a model trains on padded batches
  (with its own attention) instead of being computed wrongly.
"""
from __future__ import annotations

import importlib.util
from typing import Any

from sftkit.errors import SftkitError, UsageError

PACKED_ATTENTION = "sftkit_packed"
FLASH = ("flash_attention_3", "flash_attention_2")
# Arguments models pass that need nothing from this kernel (bounds come as ``sftkit_bounds``).
IGNORED = {"position_ids", "cache_position", "use_cache", "output_attentions", "layer_idx", "cu_seq_lens_q",
           "cu_seq_lens_k", "max_length_q", "max_length_k", "target_dtype", "attn_implementation"}


class UnsupportedAttention(SftkitError):
    """The model asked the packed CPU kernel for an attention feature it does not implement."""


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     sftkit_bounds=None, sliding_window=None, is_causal=None, **kwargs):
    """Causal attention run separately on each packed example (``sftkit_bounds`` = [(start, end)]),
    with the model's sliding window; without bounds, the whole row is one example."""
    import torch

    refused = sorted(name for name, v in kwargs.items() if name not in IGNORED and v is not None and v is not False)
    if is_causal is False:
        refused.append("is_causal=False")
    if refused:
        raise UnsupportedAttention(f"sftkit's packed attention kernel does not implement {', '.join(refused)}",
                                   hint="train with --no-packing, or on a GPU (flex or flash attention)")
    if attention_mask is not None:  # a padded batch: transformers' SDPA with the mask it built
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      sliding_window=sliding_window)
    bounds = sftkit_bounds if sftkit_bounds is not None else [(0, query.shape[2])]
    gqa = key.shape[1] != query.shape[1]
    pieces = []
    for start, end in bounds:
        length = end - start
        window = None
        if sliding_window is not None and length > sliding_window:
            i = torch.arange(length, device=query.device)
            distance = i[:, None] - i[None, :]
            window = (distance >= 0) & (distance < sliding_window)  # transformers': q - kv < window
        pieces.append(torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], attn_mask=window,
            dropout_p=dropout, scale=scaling, is_causal=window is None, enable_gqa=gqa))
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous(), None


def flash_available(kernel: str) -> bool:
    """Whether flash-attn for ``kernel`` is installed (FA3: ``flash_attn_interface``; FA2: ``flash_attn``)."""
    module = "flash_attn_interface" if kernel == "flash_attention_3" else "flash_attn"
    return importlib.util.find_spec(module) is not None


def flex_available() -> bool:
    """Whether this torch has flex attention (2.5+)."""
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def choose_kernel(requested: str, device: Any) -> str:
    """The packed-attention kernel for ``requested`` (the recipe's ``attention``) on ``device``.

    ``auto``: FA3, then FA2 (installed), then flex attention on CUDA; ``sftkit`` on CPU. A named
    kernel that cannot run here is one usage error saying what it needs.
    """
    cuda = getattr(device, "type", str(device)) == "cuda"
    if requested == "auto":
        if not cuda:
            return "sftkit"
        for kernel in FLASH:
            if flash_available(kernel):
                return kernel
        return "flex_attention" if flex_available() else "sftkit"
    if requested in FLASH:
        if not cuda:
            raise UsageError(f"attention {requested} needs a CUDA GPU", hint="use --attention auto (sftkit on CPU)")
        if not flash_available(requested):
            package = "flash-attn 3 (flash_attn_interface)" if requested == "flash_attention_3" else "flash-attn"
            raise UsageError(f"attention {requested} needs the {package} package, which is not installed",
                             hint="pip install flash-attn --no-build-isolation, or use --attention auto "
                                  "(flex attention on CUDA)")
    if requested == "flex_attention" and not flex_available():
        raise UsageError("attention flex_attention needs torch 2.5 or newer", hint="use --attention auto")
    return requested


def use_kernel(model: Any, kernel: str) -> str | None:
    """Switch a transformers model to ``kernel`` for packed batches; returns None when it runs,
    else why not (the run then trains on padded batches with the model's own attention)."""
    from transformers import AttentionInterface

    previous = getattr(model.config, "_attn_implementation", None) or "sdpa"
    name = PACKED_ATTENTION if kernel == "sftkit" else kernel
    if kernel == "sftkit":
        AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    try:
        model.set_attn_implementation(name)
    except (ValueError, AttributeError, NotImplementedError, ImportError) as exc:
        return f"{type(model).__name__} cannot switch to {name}: {str(exc).splitlines()[0][:200]}"
    if kernel == "sftkit":
        reason = _probe(model)
        if reason:
            model.set_attn_implementation(previous)
            return reason
    return None


def use_packed_attention(model: Any) -> bool:
    """Switch a model to sftkit's CPU kernel; False when it cannot be used for this model."""
    return use_kernel(model, "sftkit") is None


def _probe(model: Any) -> str | None:
    """Run two two-token examples packed into one row through the model, and the second alone:
    the kernel refuses what it cannot compute, and a model that does not hand the example bounds
    (or the restarting position ids) on to its attention gives the second example other hidden
    states packed than alone, so it is never packed."""
    import torch

    parameter = next(model.parameters())
    ids = torch.tensor([[5, 6, 7, 8]], device=parameter.device)
    positions = torch.tensor([[0, 1, 0, 1]], device=parameter.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            decoder = model.get_decoder()
            packed = decoder(input_ids=ids, position_ids=positions, use_cache=False,
                             sftkit_bounds=[(0, 2), (2, 4)]).last_hidden_state[:, 2:].float()
            alone = decoder(input_ids=ids[:, 2:], position_ids=positions[:, 2:], use_cache=False,
                            sftkit_bounds=[(0, 2)]).last_hidden_state.float()
    except UnsupportedAttention as exc:
        return exc.message
    finally:
        model.train(was_training)
    if not torch.allclose(packed, alone, rtol=1e-3, atol=1e-3 * max(1.0, float(alone.abs().max()))):
        return (f"{type(model).__name__} does not keep packed examples apart (its attention does not receive the "
                f"example bounds, or its positions do not restart)")
    return None
