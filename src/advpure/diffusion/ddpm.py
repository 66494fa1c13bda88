"""Discrete-time samplers on ``DiscreteSchedule``: DDPM ancestral and DDIM(η).

Both step between two levels n > p of a (possibly respaced) grid and are written with ᾱ_n and
ᾱ_p only, so respacing needs no other change: α = ᾱ_n / ᾱ_p and β = 1 − α are the step's
effective coefficients (Nichol & Dhariwal 2021, §4). With every level visited they are Ho et
al.'s β_n and α_n. The model is called at continuous time t = n / N (see ``discrete.py``).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .discrete import DiscreteSchedule
from .model import EpsModel
from .noise import NoiseSource
from .samplers import Callback, NoNoise, Step, run_steps

DDPM_VARIANCES = ("posterior", "beta")


def _refuse_adjoint(name: str, gradient: str) -> None:
    if gradient == "adjoint":
        raise ValueError(f"{name}: gradient 'adjoint' needs a continuous-time sampler (sde, ode, "
                         f"ld); found the discrete sampler {name!r}: use 'exact' or 'checkpoint'")


def _coefficients(schedule: DiscreteSchedule, t: float, t_next: float) -> tuple[float, float]:
    """(ᾱ_n, ᾱ_p) of the step from time t to t_next, as Python floats."""
    return float(schedule.alpha_bar(t)), float(schedule.alpha_bar(t_next))


def _eps(model: EpsModel, x: torch.Tensor, t: float) -> torch.Tensor:
    return model(x, torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype))


Guidance = Callable[..., torch.Tensor]     # guidance(x, *context) -> a gradient shaped like x


def ddpm_step(model: EpsModel, schedule: DiscreteSchedule, variance: str = "posterior",
              guidance: Guidance | None = None, guidance_scale: float = 1.0) -> Step:
    """One ancestral step x_n → x_p (Ho et al. 2020, Algorithm 2, Eqs. 6–7 and 11):

        μ = (x − β/√(1 − ᾱ_n) · ε_θ(x, n)) / √α
        x_p = μ + σ z,  σ² = β̃ = (1 − ᾱ_p)/(1 − ᾱ_n) · β  ("posterior")  or  σ² = β  ("beta")

    No noise is added on the step into level 0, for either variance (as DDPM's code does).
    With ``guidance`` the mean is shifted by s·Σ·guidance(x_n, *context), Σ = σ² I (classifier
    guidance, Dhariwal & Nichol 2021 Algorithm 1; AGDM Algorithm 1), the gradient taken at x_n.
    With the posterior variance β̃ = 0 on the step into level 0, so that step is unguided.
    """
    def step(x: torch.Tensor, t: float, t_next: float, z: torch.Tensor,
             *context: torch.Tensor) -> torch.Tensor:
        a_n, a_p = _coefficients(schedule, t, t_next)
        alpha, beta = a_n / a_p, 1.0 - a_n / a_p
        mean = (x - beta / (1.0 - a_n) ** 0.5 * _eps(model, x, t)) / alpha ** 0.5   # Eq. 11
        var = beta if variance == "beta" else (1.0 - a_p) / (1.0 - a_n) * beta    # Eqs. 6–7
        if guidance is not None and var > 0.0:
            mean = mean + guidance_scale * var * guidance(x, *context)             # μ + sΣg
        if a_p == 1.0:                                                             # level 0
            return mean
        return mean + var ** 0.5 * z
    return step


def ddim_step(model: EpsModel, schedule: DiscreteSchedule, eta: float = 0.0) -> Step:
    """One DDIM step x_n → x_p (Song, Meng & Ermon 2021, Eqs. 12 and 16):

        x̂0 = (x − √(1 − ᾱ_n) ε) / √ᾱ_n
        σ = η √((1 − ᾱ_p)/(1 − ᾱ_n)) √(1 − ᾱ_n/ᾱ_p)
        x_p = √ᾱ_p x̂0 + √(1 − ᾱ_p − σ²) ε + σ z

    η = 0 is deterministic (an integrator of the probability-flow ODE); η = 1 is DDPM with the
    posterior variance.
    """
    def step(x: torch.Tensor, t: float, t_next: float, z: torch.Tensor) -> torch.Tensor:
        a_n, a_p = _coefficients(schedule, t, t_next)
        eps = _eps(model, x, t)
        x0 = (x - (1.0 - a_n) ** 0.5 * eps) / a_n ** 0.5                          # Eq. 12
        sigma = eta * ((1.0 - a_p) / (1.0 - a_n) * (1.0 - a_n / a_p)) ** 0.5       # Eq. 16
        direction = max(1.0 - a_p - sigma ** 2, 0.0) ** 0.5
        return a_p ** 0.5 * x0 + direction * eps + sigma * z
    return step


def ddpm(model: EpsModel, x: torch.Tensor, schedule: DiscreteSchedule, *, t_start: float,
         t_end: float = 0.0, dt: float = 1e-3, noise: NoiseSource, gradient: str = "exact",
         callback: Callback | None = None, starts: torch.Tensor | None = None,
         variance: str = "posterior", guidance: Guidance | None = None,
         guidance_scale: float = 1.0, context: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
    """DDPM ancestral sampling from level round(N·t_start) to round(N·t_end), ≈ dt per step.

    ``dt = 1/N`` visits every level; a larger dt respaces. ``variance``: 'posterior' (β̃, the
    default; guided-diffusion's 'fixedsmall') or 'beta' (β, 'fixedlarge'). ``starts``: optional
    per-sample start times on the level grid (randomized t*), as in ``reverse_sde``.
    ``guidance``: a mean shift s·Σ·guidance(x, *context) per step (see ``ddpm_step``);
    ``context`` tensors are differentiated like the state.
    """
    _refuse_adjoint("ddpm", gradient)
    if variance not in DDPM_VARIANCES:
        raise ValueError(f"ddpm: expected variance in {DDPM_VARIANCES}, found {variance!r}")
    step = ddpm_step(model, schedule, variance, guidance, guidance_scale)
    return run_steps(step, x, schedule.grid(t_start, t_end, dt), noise, gradient=gradient,
                     callback=callback, starts=starts, context=context)


def ddim(model: EpsModel, x: torch.Tensor, schedule: DiscreteSchedule, *, t_start: float,
         t_end: float = 0.0, dt: float = 1e-3, noise: NoiseSource | None = None,
         gradient: str = "exact", callback: Callback | None = None,
         starts: torch.Tensor | None = None, eta: float = 0.0) -> torch.Tensor:
    """DDIM(η) from level round(N·t_start) to round(N·t_end) on the respaced grid of ``dt``.

    With η = 0 it draws no noise and ``noise`` may be None.
    """
    _refuse_adjoint("ddim", gradient)
    if not eta >= 0.0:
        raise ValueError(f"ddim: expected eta >= 0, found {eta}")
    if noise is None:
        if eta > 0:
            raise ValueError(f"ddim: expected a noise source for eta = {eta} > 0, found None")
        noise = NoNoise()
    return run_steps(ddim_step(model, schedule, eta), x, schedule.grid(t_start, t_end, dt),
                     noise, gradient=gradient, callback=callback, starts=starts)
