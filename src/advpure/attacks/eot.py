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
    mean of the K per-copy gradients. A model with ``rows_per_pass`` (a PurifiedClassifier
    packed for an accelerator's memory) gets the K·N rows in chunks of at most that many, one
    forward–backward each, the gradients summed. Returns (per-image mean loss [N], gradient
    like x).
    """
    rows = x.detach().repeat(eot, *([1] * (x.dim() - 1)))
    targets = y.repeat(eot, *([1] * (y.dim() - 1)))
    losses, grads = [], []
    for chunk in packed(len(rows), getattr(model, "rows_per_pass", None)):
        leaf = rows[chunk].requires_grad_(True)
        chunk_losses = loss(model(leaf), targets[chunk])
        (grad,) = torch.autograd.grad(chunk_losses.sum(), leaf)
        losses.append(chunk_losses.detach())
        grads.append(grad)
    grad = torch.cat(grads).view(eot, *x.shape).sum(0)
    return torch.cat(losses).view(eot, -1).mean(0), grad / eot


def packed(rows: int, rows_per_pass: int | None) -> list[slice]:
    """The row ranges of the sequential passes: all rows at once without a limit."""
    step = rows if not rows_per_pass else min(rows, rows_per_pass)
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)]
