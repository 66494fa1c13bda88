"""Expectation over transformation (Athalye et al. 2018), batched (DESIGN.md §4)."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

Model = Callable[[torch.Tensor], torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (outputs, targets) -> per sample


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def eot_loss_and_grad(model: Model, x: torch.Tensor, y: torch.Tensor, eot: int,
                      loss: Loss = cross_entropy) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``loss`` (cross-entropy by default) over ``eot`` stochastic passes and its gradient
    w.r.t. x; ``y`` holds the per-image targets (labels, or images for an output-space loss).

    The K copies run as one batch (copy-major: rows k·N … k·N+N−1 are copy k), the per-copy
    losses are summed and one backward pass gives ∑_k ∇ℓ_k; dividing by K gives exactly the
    mean of the K per-copy gradients. Returns (per-image mean loss [N], gradient like x).
    """
    x = x.detach().requires_grad_(True)
    outputs = model(x.repeat(eot, *([1] * (x.dim() - 1))))
    losses = loss(outputs, y.repeat(eot, *([1] * (y.dim() - 1))))
    (grad,) = torch.autograd.grad(losses.sum(), x)
    return losses.detach().view(eot, -1).mean(0), grad / eot
