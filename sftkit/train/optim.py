"""The optimizer (AdamW on the trainable parameters) and the learning-rate schedule."""
from __future__ import annotations

import math
from typing import Any

from sftkit.recipe import Recipe


def make_optimizer(params: list, recipe: Recipe) -> Any:
    """AdamW with the recipe's learning rate (default by method) and weight decay."""
    import torch

    return torch.optim.AdamW(params, lr=recipe.learning_rate(), weight_decay=recipe.weight_decay)


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
