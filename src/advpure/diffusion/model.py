"""The one internal model convention: a noise predictor eps(x_t, t) (DESIGN.md §2).

x_t lives in [−1, 1] (plus noise), t is a per-sample tensor [N] of continuous VP times in
[0, 1]. Score and x̂0 follow from eps through the helpers below, never elsewhere.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .schedule import VPSchedule, _per_sample


@runtime_checkable
class EpsModel(Protocol):
    """Anything callable as ``model(x_t, t) -> eps`` with ``eps`` shaped like ``x_t``."""

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


def score(model: EpsModel, x_t: torch.Tensor, t: torch.Tensor, schedule: VPSchedule,
          *context: torch.Tensor) -> torch.Tensor:
    """∇ log p_t(x_t) ≈ −eps(x_t, t) / σ(t) (Song et al. 2021, Eq. 8 with the eps parametrization).

    ``context``: extra inputs of a guided eps-model (AGDM's reference prediction), passed on.
    """
    return -model(x_t, t, *context) / _per_sample(schedule.sigma(t), x_t)


def predict_x0(model: EpsModel, x_t: torch.Tensor, t: torch.Tensor,
               schedule: VPSchedule) -> torch.Tensor:
    """Tweedie's estimate x̂0 = (x_t − σ(t) eps) / √ᾱ(t); never clamped (callers decide)."""
    eps = model(x_t, t)
    sigma = _per_sample(schedule.sigma(t), x_t)
    return (x_t - sigma * eps) / _per_sample(torch.sqrt(schedule.alpha_bar(t)), x_t)
