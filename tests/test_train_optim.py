"""The optimizer of a run: AdamW (fused where it can be) makes the textbook AdamW update."""
from __future__ import annotations

import math

import torch

from sftkit.recipe import Recipe
from sftkit.train.optim import make_optimizer


def reference_adamw(values: list[list[float]], grads: list[list[list[float]]], lr: float, decay: float,
                    betas=(0.9, 0.999), eps=1e-8) -> list[list[float]]:
    """AdamW written out element by element (Loshchilov & Hutter, torch's bias correction)."""
    out = [list(v) for v in values]
    m = [[0.0] * len(v) for v in values]
    s = [[0.0] * len(v) for v in values]
    for step, step_grads in enumerate(grads, start=1):
        for p, g in enumerate(step_grads):
            for i, gi in enumerate(g):
                out[p][i] *= 1 - lr * decay
                m[p][i] = betas[0] * m[p][i] + (1 - betas[0]) * gi
                s[p][i] = betas[1] * s[p][i] + (1 - betas[1]) * gi * gi
                m_hat = m[p][i] / (1 - betas[0] ** step)
                s_hat = s[p][i] / (1 - betas[1] ** step)
                out[p][i] -= lr * m_hat / (math.sqrt(s_hat) + eps)
    return out


def test_adamw_update_matches_the_textbook_update():
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, generator=generator)),
              torch.nn.Parameter(torch.randn(3, generator=generator))]
    start = [p.detach().tolist() for p in params]
    grads = [[torch.randn(p.shape, generator=generator) for p in params] for _ in range(3)]
    recipe = Recipe(lr=1e-2, weight_decay=0.1)
    optimizer = make_optimizer(params, recipe)
    assert optimizer.param_groups[0]["fused"] is True  # CPU float32 parameters: the fused kernel
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        optimizer.step()
    expected = reference_adamw(start, [[g.tolist() for g in step] for step in grads], lr=1e-2, decay=0.1)
    for p, want in zip(params, expected):
        assert torch.allclose(p.detach(), torch.tensor(want), rtol=1e-5, atol=1e-6), (p, want)
    assert not torch.allclose(params[0].detach(), torch.tensor(start[0]))  # it moved


def test_adamw_takes_the_default_implementation_on_a_device_without_the_fused_kernel():
    fused = make_optimizer([torch.nn.Parameter(torch.zeros(2))], Recipe(lr=1e-3))
    other = make_optimizer([torch.nn.Parameter(torch.zeros(2, device="meta"))], Recipe(lr=1e-3))
    assert fused.param_groups[0]["fused"] is True
    assert not other.param_groups[0]["fused"]
    assert other.param_groups[0]["lr"] == 1e-3
