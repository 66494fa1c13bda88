"""Classifier-confidence guidance (COUP Eq. 5): ∇x log max_y p̂(y|x).

The attack gradient through the guidance is second order (it differentiates a gradient):
``second_order=True`` builds the guidance gradient with ``create_graph`` whenever its input is
being differentiated, which is the Hessian term −g²∇²log f·z of COUP's augmented SDE (§4.2.1).
``second_order=False`` computes it on a detached copy, so backward treats it as a constant —
what the authors' public code does, and so what its attacks saw.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .guided import differentiable_copy

GUIDANCE_GRADS = ("second_order", "first_order")


def confidence_gradient(classifier: nn.Module, x: torch.Tensor, *,
                        second_order: bool = True) -> torch.Tensor:
    """∇x log max_y p̂(y|x) with p̂ = softmax(classifier(x)), per sample.

    Gradients are enabled locally (the guidance needs one even when the caller runs without a
    graph). With ``second_order`` and an ``x`` that is itself being differentiated the result
    keeps its graph; otherwise it is computed on a detached copy and is a constant.
    """
    keep_graph = second_order and torch.is_grad_enabled() and x.requires_grad
    with torch.enable_grad():
        x_in = differentiable_copy(x, keep_graph)
        log_confidence = F.log_softmax(classifier(x_in), dim=1).max(dim=1).values
        (grad,) = torch.autograd.grad(log_confidence.sum(), x_in, create_graph=keep_graph)
    return grad


class ConfidenceGuidance(nn.Module):
    """guidance(x) = ∇x log max_y p̂(y|x) of ``classifier`` (which takes the states as they are)."""

    def __init__(self, classifier: nn.Module, second_order: bool = True):
        super().__init__()
        self.classifier = classifier
        self.second_order = second_order    # differentiate the guidance gradient in backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return confidence_gradient(self.classifier, x, second_order=self.second_order)


class FromCentered(nn.Module):
    """A [0, 1]-image classifier called on diffusion states in [−1, 1]: classifier((x + 1) / 2).

    No clamping and no range check: the states x_t of a reverse process leave [−1, 1] (COUP
    Algorithm 1 and AGDM call the classifier on them as they are; DESIGN.md §2).
    """

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier((x + 1.0) / 2.0)
