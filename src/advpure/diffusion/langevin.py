"""LD-SDE: purification by Langevin dynamics on the learned score (DiffPure App. B.4, Eq. 26).

    dx = −(λ/2) [−s_θ(x, 0) + (x − x_a)/σ²] dt + η √λ dw,   t ∈ [0, 1],   x(0) = x_a

(DiffPure's code integrates over [1 − T/1000, 1 − 1e-5] for ``--t T``: ``span`` = T/1000 and
``t_end`` = 1e-5 here, with its λ and dt as they are.)

No forward noising and no t*: the chain starts at the attacked image x_a itself. The score
"at t = 0" is taken at a small time ``score_t`` (1e-3 by default) since σ(0) = 0. The paper's
best setting after its grid search, and our defaults (``LD_DEFAULTS``).
"""
from __future__ import annotations

import torch

from .model import EpsModel, score
from .noise import NoiseSource
from .samplers import Callback, Step, run_steps, torchsde_times
from .schedule import VPSchedule


def _ld_drift(model: EpsModel, schedule: VPSchedule, x: torch.Tensor, x_a: torch.Tensor,
              sigma2: float, lam: float, score_t: float) -> torch.Tensor:
    """−(λ/2)[−s_θ(x, score_t) + (x − x_a)/σ²], the drift of Eq. 26."""
    t_vec = torch.full((x.shape[0],), score_t, device=x.device, dtype=x.dtype)
    return -0.5 * lam * (-score(model, x, t_vec, schedule) + (x - x_a) / sigma2)


def langevin_step(model: EpsModel, schedule: VPSchedule, *, sigma2: float, lam: float,
                  eta: float, score_t: float) -> Step:
    """One Euler–Maruyama step of Eq. 26 over h = t_next − t; x_a is the step's context."""
    def step(x: torch.Tensor, t: float, t_next: float, z: torch.Tensor,
             x_a: torch.Tensor) -> torch.Tensor:
        h = t_next - t
        drift = _ld_drift(model, schedule, x, x_a, sigma2, lam, score_t)
        return x + drift * h + eta * (lam * h) ** 0.5 * z
    return step


class LangevinSDE(torch.nn.Module):
    """Eq. 26 for torchsde on flattened states: f = the LD drift, g = η√λ (diagonal, Itô)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, model: EpsModel, schedule: VPSchedule, x_a: torch.Tensor, *,
                 sigma2: float, lam: float, eta: float, score_t: float):
        super().__init__()
        self.model, self.schedule, self.x_a = model, schedule, x_a
        self.sigma2, self.lam, self.eta, self.score_t = sigma2, lam, eta, score_t

    def f(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = y.view(self.x_a.shape)
        drift = _ld_drift(self.model, self.schedule, x, self.x_a, self.sigma2, self.lam,
                          self.score_t)
        return drift.flatten(1)

    def g(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.full_like(y, self.eta * self.lam ** 0.5)


LD_DEFAULTS = {"sigma2": 100.0, "lam": 0.1, "eta": 1.0, "score_t": 1e-3}   # DiffPure's best


def langevin_sde(model: EpsModel, x_a: torch.Tensor, schedule: VPSchedule, *, dt: float,
                 noise: NoiseSource, sigma2: float = LD_DEFAULTS["sigma2"],
                 lam: float = LD_DEFAULTS["lam"], eta: float = LD_DEFAULTS["eta"],
                 score_t: float = LD_DEFAULTS["score_t"], span: float = 1.0,
                 t_end: float = 0.0, grid: str = "uniform", gradient: str = "exact",
                 callback: Callback | None = None) -> torch.Tensor:
    """Solve the LD-SDE (Eq. 26) from x(0) = x_a (in [−1, 1]) over a time ``span`` (the
    paper's 1) less ``t_end`` with steps of ≈ dt on ``grid`` (``ld_times``).

    Gradients reach x_a both through the start state and through the attraction term
    (x − x_a)/σ²; ``gradient='adjoint'`` solves with torchsde's adjoint (approximate).
    """
    options = dict(sigma2=sigma2, lam=lam, eta=eta, score_t=score_t)
    if gradient == "adjoint":
        from .adjoint import solve_adjoint

        sde = LangevinSDE(model, schedule, x_a, **options)
        params = (x_a,) if x_a.requires_grad else ()
        return solve_adjoint(sde, x_a, span - t_end, dt, noise, params)
    return run_steps(langevin_step(model, schedule, **options), x_a,
                     ld_times(span, t_end, dt, grid), noise, gradient=gradient,
                     callback=callback, context=(x_a,))


def ld_times(span: float, t_end: float, dt: float, grid: str = "uniform") -> torch.Tensor:
    """Increasing times from 0 to span − t_end: equal steps of ≈ dt (``uniform``), or as
    DiffPure's LD runner integrates s from 1 − span to 1 − t_end with torchsde's fixed steps
    (``authors-code``; runners/diffpure_ldsde.py 233-243, span = T/1000 for --t T, t_end 1e-5:
    a last step of 0.00999033 for T = 400, dt = 1e-2), shifted to start at 0."""
    if not span > t_end >= 0.0:
        raise ValueError(f"LD-SDE: expected span > t_end >= 0, found span={span}, t_end={t_end}")
    if grid == "authors-code":
        s = torchsde_times(1.0 - span, 1.0 - t_end, dt)
        return s - s[0]
    steps = max(1, round((span - t_end) / dt))
    return torch.linspace(0.0, span - t_end, steps + 1, dtype=torch.float64)
