"""Expectation over transformation (Athalye et al. 2018), batched (DESIGN.md §4)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from .drawlog import DrawLog, record
from .losses import Loss, cross_entropy, failed

Model = Callable[[torch.Tensor], torch.Tensor]


def eot_loss_and_grad(model: Model, x: torch.Tensor, y: torch.Tensor, eot: int,
                      loss: Loss = cross_entropy, log: DrawLog | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``loss`` (cross-entropy by default) over ``eot`` stochastic passes and its gradient
    w.r.t. x; ``y`` holds the per-image targets (labels, or images for an output-space loss).

    The K copies run as one batch (copy-major: rows k·N … k·N+N−1 are copy k), the per-copy
    losses are summed and one backward pass gives ∑_k ∇ℓ_k; dividing by K gives exactly the
    mean of the K per-copy gradients. A model that plans its passes (``plan_pass``: a
    PurifiedClassifier packed for an accelerator's memory) gets the K·N rows in chunks of the
    sizes it asks for, one forward–backward each, the gradients summed. Returns (per-image mean
    loss [N], gradient like x). ``log`` records which images some of the K draws misclassified
    (class labels only: ``y`` of integers).
    """
    rows = x.detach().repeat(eot, *([1] * (x.dim() - 1)))
    targets = y.repeat(eot, *([1] * (y.dim() - 1)))
    plan = getattr(model, "plan_pass", lambda remaining: remaining)
    losses, grads, hits, start = [], [], [], 0
    while start < len(rows):
        chunk = slice(start, start + plan(len(rows) - start))
        leaf = rows[chunk].requires_grad_(True)
        outputs = model(leaf)
        if log is not None and not targets.is_floating_point():
            logits = outputs[0] if isinstance(outputs, tuple) else outputs
            hits.append(failed(logits.detach(), targets[chunk]))
        chunk_losses = loss(outputs, targets[chunk])
        (grad,) = torch.autograd.grad(chunk_losses.sum(), leaf)
        losses.append(chunk_losses.detach())
        grads.append(grad)
        start = chunk.stop
    if hasattr(model, "passes"):
        model.passes = len(grads)
    if hits:
        record(log, torch.cat(hits).view(eot, -1))
    grad = torch.cat(grads).view(eot, *x.shape).sum(0)
    return torch.cat(losses).view(eot, -1).mean(0), grad / eot
