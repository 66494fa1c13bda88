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


class GaussianMixtureEps(torch.nn.Module):
    """The exact eps-model of an equal-weight mixture of N(m_k, v0) on 1-D states N×1.

    The VP marginal is the mixture of N(√ᾱ m_k, ᾱ v0 + σ²); its score is the posterior-weighted
    sum of the component scores, and eps = −σ·score (COUP §5.3.2's toy has m = ±0.5, v0 = 1).
    """

    def __init__(self, means: torch.Tensor, var0: float, schedule: VPSchedule):
        super().__init__()
        self.means, self.var0, self.schedule = means.double(), float(var0), schedule

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.schedule.alpha_bar(t).to(x_t.dtype)[:, None]          # N×1
        centers = a.sqrt() * self.means.to(x_t.dtype)[None, :]          # N×K
        var = a * self.var0 + 1.0 - a
        weights = torch.softmax(-(x_t - centers) ** 2 / (2.0 * var), dim=1)
        score = -(weights * (x_t - centers)).sum(1, keepdim=True) / var
        return -(1.0 - a).sqrt() * score


def mixture_posterior_below(x_t: float, t: float, means: torch.Tensor, var0: float,
                            schedule: VPSchedule, threshold: float = 0.0) -> float:
    """P(x0 < threshold | x(t) = x_t) for the equal-weight mixture of N(m_k, v0).

    Each component's posterior is Gaussian: variance v = v0σ² / (ᾱv0 + σ²), mean
    v (m_k / v0 + √ᾱ x_t / σ²), weighted by N(x_t; √ᾱ m_k, ᾱv0 + σ²). The reverse SDE with the
    exact score samples exactly this posterior (COUP §5.3.2 with λ = 0 and no classifier noise).
    """
    a = float(schedule.alpha_bar(t))
    s2 = 1.0 - a
    means = means.double()
    var_post = var0 * s2 / (a * var0 + s2)
    mean_post = var_post * (means / var0 + a ** 0.5 * x_t / s2)
    log_w = -(x_t - a ** 0.5 * means) ** 2 / (2.0 * (a * var0 + s2))
    w = torch.softmax(log_w, dim=0)
    below = 0.5 * (1.0 + torch.erf((threshold - mean_post) / (2.0 * var_post) ** 0.5))
    return float((w * below).sum())
