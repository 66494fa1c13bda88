"""The discrete DDPM schedule (Ho et al. 2020) and its explicit mapping to continuous VP time.

Linear β from β_1 = 1e-4 to β_N = 0.02 over N = 1000 levels, ᾱ_n = ∏_{j≤n} (1 − β_j), ᾱ_0 = 1.
This is the discretisation of the continuous VP-SDE with β_min = N·β_1 = 0.1 and
β_max = N·β_N = 20 (Song et al. 2021, App. B), so **level n ↔ time t = n / N**, and a
continuous t* selects the level n* = round(N·t*) (AGDM's "t* = 70" is ``t_star=0.07``).
Model time is always continuous: a discrete sampler calls ``eps(x, n / N)``; adapters of
checkpoints trained on integer timesteps convert back (0-based timestep index n − 1).

Approximation error of the mapping (``VPSchedule`` at t = n/N against the levels here, all
1000 levels; ``tests/test_discrete.py`` checks these bounds):

- |σ_n − σ(n/N)| ≤ 1.4e-3 everywhere (largest near t = 0.04); relative to σ: 2.5 % at n = 10,
  0.8 % at n = 50, 0.36 % at n = 100 and below 0.1 % from n = 200 on;
- |√ᾱ_n − √ᾱ(n/N)| ≤ 1.0e-3; relative error of ᾱ below 0.11 % for t ≤ 0.3, 0.6 % at t = 0.5,
  6.5 % at t = 1 (where ᾱ ≈ 4e-5 and the signal is gone anyway).

The discrete chain has slightly *less* noise at small n: its left Riemann sum Σβ_j falls short
of ∫β. Purification at t* ≤ 0.3 sees the two schedules as the same to well under 1 %.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from .schedule import TimeLike, VPSchedule, _as_tensor


@dataclass(frozen=True)
class DiscreteSchedule:
    """DDPM's linear β schedule on levels n = 0..N, addressed by continuous time t = n / N."""

    beta_start: float = 1e-4   # β_1
    beta_end: float = 0.02     # β_N
    levels: int = 1000         # N

    @cached_property
    def betas(self) -> torch.Tensor:
        """β_0 = 0 (level 0 is the data) followed by β_1..β_N, float64 [N + 1]."""
        ramp = torch.linspace(self.beta_start, self.beta_end, self.levels, dtype=torch.float64)
        return torch.cat([torch.zeros(1, dtype=torch.float64), ramp])

    @cached_property
    def alpha_bars(self) -> torch.Tensor:
        """ᾱ_n = ∏_{j≤n} (1 − β_j), float64 [N + 1] with ᾱ_0 = 1."""
        return torch.cumprod(1.0 - self.betas, dim=0)

    def level(self, t: TimeLike) -> torch.Tensor:
        """n = round(N·t) for t in [0, 1] (int64, same shape as t)."""
        t = _as_tensor(t)
        if bool(((t < 0) | (t > 1)).any()):
            raise ValueError(f"DiscreteSchedule: expected times in [0, 1], found {t.tolist()}")
        return torch.round(t.double() * self.levels).long()

    def time(self, level: torch.Tensor | int) -> torch.Tensor:
        """t = n / N (float64)."""
        return torch.as_tensor(level, dtype=torch.float64) / self.levels

    def snap(self, t: TimeLike) -> torch.Tensor:
        """The time of the level nearest to t: round(N·t) / N."""
        return self.time(self.level(t))

    def alpha_bar(self, t: TimeLike) -> torch.Tensor:
        """ᾱ at the level of t (t is snapped to the nearest level)."""
        t = _as_tensor(t)
        return self.alpha_bars.to(t.device)[self.level(t).to(t.device)]

    def sigma(self, t: TimeLike) -> torch.Tensor:
        """σ = √(1 − ᾱ) at the level of t."""
        return torch.sqrt(1.0 - self.alpha_bar(t))

    def continuous(self) -> VPSchedule:
        """The continuous VP schedule this one discretises: β_min = N·β_1, β_max = N·β_N."""
        return VPSchedule(beta_min=self.levels * self.beta_start, beta_max=self.levels * self.beta_end)

    def grid(self, t_start: float, t_end: float, dt: float) -> torch.Tensor:
        """Respaced levels from t_start down to t_end as times: round((t_start − t_end)/dt) steps
        on evenly spaced integer levels (Nichol & Dhariwal 2021). dt = 1/N visits every level,
        dt = k/N every k-th one."""
        first, last = int(self.level(t_start)), int(self.level(t_end))
        if not first > last:
            raise ValueError(f"DiscreteSchedule.grid: expected t_start above t_end by at least "
                             f"one level, found levels {first} and {last}")
        if not dt > 0:
            raise ValueError(f"DiscreteSchedule.grid: expected dt > 0, found {dt}")
        steps = max(1, round((float(t_start) - float(t_end)) / dt))
        if steps > first - last:
            raise ValueError(f"DiscreteSchedule.grid: dt={dt} asks for {steps} steps between "
                             f"levels {first} and {last}; expected dt >= 1/{self.levels}")
        levels = torch.round(torch.linspace(first, last, steps + 1, dtype=torch.float64))
        return self.time(levels)


NOISINGS = ("continuous", "discrete")


def discrete_levels(vp: VPSchedule, levels: int = 1000) -> DiscreteSchedule:
    """The DDPM levels a VP schedule discretises, β_n from β_min/N to β_max/N (score_sde's
    ``VPSDE.discrete_betas``, whose ᾱ DiffPure's SDE and ODE runners noise with)."""
    return DiscreteSchedule(beta_start=vp.beta_min / levels, beta_end=vp.beta_max / levels,
                            levels=levels)
