"""Gaussian data, where score and gradients are known in closed form (DiffPure App. B.5).

For data N(mu, cov) the VP marginal is p_t = N(√ᾱ mu, ᾱ cov + σ² I), so the exact eps-model,
the gradient of the purified x(0) w.r.t. x(t*) of the continuous reverse SDE (Eq. 31), and the
same gradient of its Euler–Maruyama discretisation are all available without a network.
"""
from __future__ import annotations

import torch

from .samplers import time_grid
from .schedule import VPSchedule


class GaussianEps(torch.nn.Module):
    """The exact eps-model of N(mu, cov) data on flat states N×d.

    With cov = U diag(λ) Uᵀ: score = −U diag(1 / (ᾱλ + σ²)) Uᵀ (x − √ᾱ mu) and eps = −σ·score.
    """

    def __init__(self, mu: torch.Tensor, cov: torch.Tensor, schedule: VPSchedule):
        super().__init__()
        self.mu, self.schedule = mu, schedule
        self.lam, self.U = torch.linalg.eigh(cov)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.schedule.alpha_bar(t).to(x_t.dtype)[:, None]
        z = (x_t - a.sqrt() * self.mu) @ self.U
        score = -(z / (a * self.lam + 1.0 - a)) @ self.U.T
        return -(1.0 - a).sqrt() * score


def posterior_gradient(schedule: VPSchedule, t_star: float, var0: float) -> float:
    """∂x(0)/∂x(t*) = √ᾱ σ0² / (1 − ᾱ + σ0² ᾱ) for N(μ0, σ0²) data (DiffPure Eq. 31)."""
    a = float(schedule.alpha_bar(t_star))
    return a ** 0.5 * var0 / (1.0 - a + var0 * a)


def discretised_gradient(schedule: VPSchedule, t_star: float, dt: float, var0: float) -> float:
    """The same gradient for the Euler–Maruyama chain of ``reverse_sde``.

    Each step x ← x + hβ(t)(½x + s(x, t)) + noise with s = −(x − √ᾱ μ0)/(ᾱσ0² + σ²) is affine
    in x, so ∂x(0)/∂x(t*) = ∏_i [1 + h_i β(t_i)(½ − 1/(ᾱ(t_i)σ0² + σ²(t_i)))].
    """
    times = time_grid(t_start=t_star, t_end=0.0, dt=dt)
    t, h = times[:-1], times[:-1] - times[1:]
    a = schedule.alpha_bar(t)
    return float(torch.prod(1.0 + h * schedule.beta(t) * (0.5 - 1.0 / (a * var0 + 1.0 - a))))
