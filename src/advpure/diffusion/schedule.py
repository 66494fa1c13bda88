"""The continuous variance-preserving (VP) schedule (Song et al. 2021; DiffPure Eqs. 1, 3).

Forward SDE: dx = -½ β(t) x dt + √β(t) dw with β(t) = β_min + (β_max − β_min) t, t ∈ [0, 1].
Its marginal is x_t = √ᾱ(t) x_0 + σ(t) ε with ᾱ(t) = exp(−∫₀ᵗ β(s) ds) and σ(t) = √(1 − ᾱ(t)).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

TimeLike = float | torch.Tensor


def _as_tensor(t: TimeLike) -> torch.Tensor:
    return t if isinstance(t, torch.Tensor) else torch.tensor(float(t), dtype=torch.float64)


@dataclass(frozen=True)
class VPSchedule:
    """β(t), ᾱ(t), σ(t) of the continuous VP-SDE; defaults are DiffPure's (β_min=0.1, β_max=20)."""

    beta_min: float = 0.1   # β(0)
    beta_max: float = 20.0  # β(1)

    def beta(self, t: TimeLike) -> torch.Tensor:
        """β(t) = β_min + (β_max − β_min) t."""
        return self.beta_min + (self.beta_max - self.beta_min) * _as_tensor(t)

    def integral_beta(self, t: TimeLike) -> torch.Tensor:
        """∫₀ᵗ β(s) ds = β_min t + ½ (β_max − β_min) t²."""
        t = _as_tensor(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def alpha_bar(self, t: TimeLike) -> torch.Tensor:
        """ᾱ(t) = exp(−∫₀ᵗ β), the signal power at time t (DiffPure's α(t) in Eq. 3)."""
        return torch.exp(-self.integral_beta(t))

    def sigma(self, t: TimeLike) -> torch.Tensor:
        """σ(t) = √(1 − ᾱ(t)), computed with expm1 so that it stays accurate near t = 0."""
        return torch.sqrt(-torch.expm1(-self.integral_beta(t)))


def _per_sample(coeff: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or per-sample [N] coefficient against an N×… tensor."""
    coeff = coeff.to(device=like.device, dtype=like.dtype)
    return coeff.reshape(-1, *([1] * (like.dim() - 1))) if coeff.dim() == 1 else coeff


def add_noise(x0: torch.Tensor, t: TimeLike, eps: torch.Tensor,
              schedule: VPSchedule) -> torch.Tensor:
    """Sample the forward marginal: x_t = √ᾱ(t) x_0 + σ(t) ε (DiffPure Eq. 3).

    ``t`` is a scalar or a per-sample vector of shape [N]; ``eps`` is standard normal noise
    shaped like ``x0``, passed in by the caller.
    """
    mean_coeff = _per_sample(torch.sqrt(schedule.alpha_bar(t)), x0)
    return mean_coeff * x0 + _per_sample(schedule.sigma(t), x0) * eps
