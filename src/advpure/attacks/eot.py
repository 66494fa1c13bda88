"""Expectation over transformation (Athalye et al. 2018), batched (DESIGN.md §4)."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

Model = Callable[[torch.Tensor], torch.Tensor]


def eot_loss_and_grad(model: Model, x: torch.Tensor, y: torch.Tensor,
                      eot: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over ``eot`` stochastic passes and its gradient w.r.t. x.

    The K copies run as one batch (copy-major: rows k·N … k·N+N−1 are copy k), the per-copy
    losses are summed and one backward pass gives ∑_k ∇ℓ_k; dividing by K gives exactly the
    mean of the K per-copy gradients. Returns (per-image mean loss [N], gradient like x).
    """
    x = x.detach().requires_grad_(True)
    logits = model(x.repeat(eot, *([1] * (x.dim() - 1))))
    losses = F.cross_entropy(logits, y.repeat(eot), reduction="none")
    (grad,) = torch.autograd.grad(losses.sum(), x)
    return losses.detach().view(eot, -1).mean(0), grad / eot
