"""Classifier-confidence guidance (COUP Eq. 5): the score becomes s_θ + λ·∇x log max_y p̂(y|x).

The guidance enters as an eps-model, so every sampler and every gradient mode (exact,
checkpoint, torchsde's adjoint) runs it unchanged:

    eps_guided(x, t) = eps(x, t) − λ σ(t) ∇x log max_y p̂(y|x)
    ⇔ score_guided = −eps_guided / σ(t) = s_θ(x, t) + λ ∇x log max_y p̂(y|x).

The attack gradient through the guidance term is second order (it differentiates a gradient):
``second_order=True`` builds the guidance gradient with ``create_graph`` whenever its input is
being differentiated, which is the Hessian term −g²∇²log f·z of COUP's augmented SDE (§4.2.1).
``second_order=False`` computes it on a detached copy, so backward treats it as a constant —
what the authors' public code does, and so what its attacks saw.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion.schedule import _per_sample

GUIDANCE_GRADS = ("second_order", "first_order")


def confidence_gradient(classifier: nn.Module, x: torch.Tensor, *,
                        second_order: bool = True) -> torch.Tensor:
    """∇x log max_y p̂(y|x) with p̂ = softmax(classifier(x)), per sample.

    Gradients are enabled locally (the guidance needs one even when the caller runs without a
    graph). With ``second_order`` and an ``x`` that is itself being differentiated the result
    keeps its graph; otherwise it is computed on a detached copy and is a constant.
    """
    differentiate = second_order and torch.is_grad_enabled() and x.requires_grad
    with torch.enable_grad():
        x_in = x if differentiate else x.detach().requires_grad_(True)
        log_confidence = F.log_softmax(classifier(x_in), dim=1).max(dim=1).values
        (grad,) = torch.autograd.grad(log_confidence.sum(), x_in, create_graph=differentiate)
    return grad


class FromCentered(nn.Module):
    """A [0, 1]-image classifier called on diffusion states in [−1, 1]: classifier((x + 1) / 2).

    No clamping and no range check: the states x_t of a reverse process leave [−1, 1] (COUP
    Algorithm 1 calls the classifier on them as they are; DESIGN.md §2).
    """

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier((x + 1.0) / 2.0)


class ConfidenceGuidedEps(nn.Module):
    """The eps-model of the guided score s_θ + λ ∇x log max_y p̂(y|x) (COUP Eq. 5).

    ``classifier`` takes the sampler's states as they are (wrap an image classifier in
    ``FromCentered``); ``schedule`` gives σ(t) (a VP or a discrete schedule).
    """

    def __init__(self, model: nn.Module, classifier: nn.Module, schedule, scale: float = 1.0,
                 second_order: bool = True):
        super().__init__()
        self.model = model                  # eps(x_t, t), x_t in [−1, 1]
        self.classifier = classifier        # states -> logits
        self.schedule = schedule            # σ(t)
        self.scale = float(scale)           # λ (COUP default 1)
        self.second_order = second_order    # differentiate the guidance gradient in backward

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = _per_sample(self.schedule.sigma(t), x_t)
        guidance = confidence_gradient(self.classifier, x_t, second_order=self.second_order)
        return self.model(x_t, t) - self.scale * sigma * guidance

    def extra_repr(self) -> str:
        return f"scale={self.scale}, second_order={self.second_order}"
