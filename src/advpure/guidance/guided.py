"""A guided eps-model: the score plus a guidance gradient, for every continuous sampler.

    eps_guided(x, t, *context) = eps(x, t) − s σ(t) guidance(x, *context)
    ⇔ score_guided = −eps_guided / σ(t) = s_θ(x, t) + s · guidance(x, *context)

COUP Eq. 5 (guidance = ∇log max_y p̂(y|x), s = λ) and AGDM Eq. 18 (guidance = a_φ + b_φ) are
this with their own guidance. Being an eps-model, it runs under every sampler and gradient mode,
torchsde's adjoint included; ``context`` (AGDM's reference prediction) is passed by the sampler.
"""
from __future__ import annotations

import torch
from torch import nn

from ..diffusion.schedule import _per_sample


class GuidedEps(nn.Module):
    """``model``'s eps with ``scale`` × ``guidance`` added to its score (see the module doc)."""

    def __init__(self, model: nn.Module, guidance: nn.Module, schedule, scale: float = 1.0):
        super().__init__()
        self.model = model              # eps(x_t, t), x_t in [−1, 1]
        self.guidance = guidance        # guidance(x_t, *context) -> gradient shaped like x_t
        self.schedule = schedule        # σ(t): a VP or a discrete schedule
        self.scale = float(scale)       # COUP's λ, AGDM's s

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
        sigma = _per_sample(self.schedule.sigma(t), x_t)
        return self.model(x_t, t) - self.scale * sigma * self.guidance(x_t, *context)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def differentiable_copy(x: torch.Tensor, keep_graph: bool) -> torch.Tensor:
    """``x`` itself when its graph is to be kept (second-order guidance under differentiation),
    else a detached copy that requires grad, so a guidance gradient can be taken from it."""
    return x if keep_graph and x.requires_grad else x.detach().requires_grad_(True)
