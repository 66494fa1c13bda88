"""Pieces shared by the training loops: minibatches, EMA."""
from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn


def minibatches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled index batches over range(n), one fresh permutation per epoch."""
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i:i + batch_size]


class EMA:
    """Exponential moving average of a model's weights: θ_ema ← d·θ_ema + (1 − d)·θ."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p, 1.0 - self.decay)


@torch.no_grad()
def init_weights(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Redraw every conv/linear weight and bias from U(−1/√fan_in, 1/√fan_in) with ``generator``.

    This is PyTorch's default initialization in distribution, made reproducible without
    touching the global random state.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            bound = module.weight[0].numel() ** -0.5
            module.weight.uniform_(-bound, bound, generator=generator)
            if module.bias is not None:
                module.bias.uniform_(-bound, bound, generator=generator)
    return model
