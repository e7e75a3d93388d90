"""The optimizer (AdamW on the trainable parameters) and the learning-rate schedule."""
from __future__ import annotations

import math
from typing import Any

from sftkit.recipe import Recipe


FUSED_DEVICES = ("cpu", "cuda")


def make_optimizer(params: list, recipe: Recipe) -> Any:
    """AdamW with the recipe's learning rate (default by method) and weight decay.

    torch's fused kernel (one pass over each parameter, its gradient and both moments) where every
    trainable parameter is a floating-point tensor on the CPU or a CUDA GPU: the same update as the
    default implementation (to rounding), 3.4x faster on CPU for SmolLM2-135M's 135M parameters
    (0.18 s instead of 0.60 s a step, about 8% of a full fine-tuning step); elsewhere the default.
    """
    import torch

    kwargs = {"lr": recipe.learning_rate(), "weight_decay": recipe.weight_decay}
    if params and all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params):
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # a torch without the fused kernel for these tensors
            pass
    return torch.optim.AdamW(params, **kwargs)


def make_scheduler(optimizer: Any, recipe: Recipe, total_steps: int) -> Any:
    """Cosine (default), linear or constant, after ``warmup_ratio`` of the steps."""
    from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                              get_linear_schedule_with_warmup)

    warmup = math.ceil(recipe.warmup_ratio * total_steps)
    if recipe.scheduler == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    if recipe.scheduler == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)
