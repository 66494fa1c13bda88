"""Discrete-time samplers on ``DiscreteSchedule``: DDPM ancestral and DDIM(η).

Both step between two levels n > p of a (possibly respaced) grid and are written with ᾱ_n and
ᾱ_p only, so respacing needs no other change: α = ᾱ_n / ᾱ_p and β = 1 − α are the step's
effective coefficients (Nichol & Dhariwal 2021, §4). With every level visited they are Ho et
al.'s β_n and α_n. The model is called at continuous time t = n / N (see ``discrete.py``).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .discrete import DiscreteSchedule
from .model import EpsModel
from .noise import NoiseSource
from .samplers import Callback, NoNoise, Step, run_steps

DDPM_VARIANCES = ("posterior", "beta", "learned")


def check_variance(model: EpsModel, variance: str) -> str:
    """``variance`` if the model can give it: 'learned' needs learned-variance outputs."""
    if variance not in DDPM_VARIANCES:
        raise ValueError(f"ddpm: expected variance in {DDPM_VARIANCES}, found {variance!r}")
    if variance == "learned" and not getattr(model, "learned_variance", False):
        raise ValueError("ddpm_variance 'learned' needs a model with learned-variance outputs "
                         "(guided-diffusion's learn_sigma UNet, e.g. guided-diffusion:PATH); "
                         f"found a {type(model).__name__} without them: use 'posterior' or "
                         "'beta'")
    return variance


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
              guidance: Guidance | None = None, guidance_scale: float = 1.0, *,
              clip_denoised: bool = False, grid: torch.Tensor | None = None) -> Step:
    """One ancestral step x_n → x_p (Ho et al. 2020, Algorithm 2, Eqs. 6–7 and 11):

        μ = (x − β/√(1 − ᾱ_n) · ε_θ(x, n)) / √α
        x_p = μ + σ z,  σ² = β̃ = (1 − ᾱ_p)/(1 − ᾱ_n) · β  ("posterior")  or  σ² = β  ("beta")

    ``"learned"``: log σ² = f·log β + (1 − f)·log β̃ with f = (v + 1)/2 from the model's
    variance outputs v (Nichol & Dhariwal 2021, Eq. 15), β and β̃ those of the respaced step as
    guided-diffusion computes them; on the step into level 0, where β̃ = 0, β̃ is the next
    step's (the one from the grid point above, guided-diffusion's "clipped" log-variance; β
    without a step above). ``clip_denoised``: the mean is the posterior mean of x̂0 clipped to
    [−1, 1], μ = √ᾱ_p β/(1 − ᾱ_n) x̂0 + √α (1 − ᾱ_p)/(1 − ᾱ_n) x (Ho et al. Eq. 7;
    guided-diffusion's ``p_mean_variance``), which without the clip is the μ above.
    No noise is added on the step into level 0, for every variance (as DDPM's code does).
    With ``guidance`` the mean is shifted by s·Σ·guidance(x_n, *context), Σ = σ² I (classifier
    guidance, Dhariwal & Nichol 2021 Algorithm 1; AGDM Algorithm 1), the gradient taken at x_n.
    With the posterior variance β̃ = 0 on the step into level 0, so that step is unguided.
    """
    check_variance(model, variance)
    times = [] if grid is None else [float(g) for g in torch.unique_consecutive(grid)]
    above = dict(zip(times[1:], times[:-1]))                   # t -> the grid time above it

    def step(x: torch.Tensor, t: float, t_next: float, z: torch.Tensor,
             *context: torch.Tensor) -> torch.Tensor:
        a_n, a_p = _coefficients(schedule, t, t_next)
        if variance == "learned":
            eps, values = model.eps_and_variance(x, _times(x, t))
            var = _learned_variance(values, schedule, t, t_next, above.get(t))
        else:
            eps, beta = _eps(model, x, t), 1.0 - a_n / a_p
            var = beta if variance == "beta" else (1.0 - a_p) / (1.0 - a_n) * beta  # Eqs. 6–7
        mean = _mean(x, eps, a_n, a_p, clip_denoised)
        if guidance is not None and (variance == "learned" or var > 0.0):
            mean = mean + guidance_scale * var * guidance(x, *context)             # μ + sΣg
        if a_p == 1.0:                                                             # level 0
            return mean
        return mean + var ** 0.5 * z
    return step


def _mean(x: torch.Tensor, eps: torch.Tensor, a_n: float, a_p: float,
          clip_denoised: bool) -> torch.Tensor:
    """The step's mean: Eq. 11 from eps, or the posterior mean of the clipped x̂0 (Eq. 7)."""
    alpha, beta = a_n / a_p, 1.0 - a_n / a_p
    if not clip_denoised:
        return (x - beta / (1.0 - a_n) ** 0.5 * eps) / alpha ** 0.5                # Eq. 11
    x0 = ((x - (1.0 - a_n) ** 0.5 * eps) / a_n ** 0.5).clamp(-1.0, 1.0)
    return (a_p ** 0.5 * beta * x0 + alpha ** 0.5 * (1.0 - a_p) * x) / (1.0 - a_n)  # Eq. 7


def _learned_variance(values: torch.Tensor, schedule: DiscreteSchedule, t: float,
                      t_next: float, t_above: float | None) -> torch.Tensor:
    """exp(f log β + (1 − f) log β̃_clipped), f = (v + 1)/2 (Nichol & Dhariwal Eq. 15)."""
    a_n, a_p = _coefficients(schedule, t, t_next)
    beta = 1.0 - a_n / a_p
    if a_p < 1.0:
        floor = (1.0 - a_p) / (1.0 - a_n) * beta
    elif t_above is not None:                         # into level 0: the step above's β̃
        a_up = float(schedule.alpha_bar(t_above))
        floor = (1.0 - a_n) / (1.0 - a_up) * (1.0 - a_up / a_n)
    else:
        floor = beta
    frac = (values + 1.0) / 2.0
    return torch.exp(frac * math.log(beta) + (1.0 - frac) * math.log(floor))


def _times(x: torch.Tensor, t: float) -> torch.Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)


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
         guidance_scale: float = 1.0, context: tuple[torch.Tensor, ...] = (),
         clip_denoised: bool = False) -> torch.Tensor:
    """DDPM ancestral sampling from level round(N·t_start) to round(N·t_end), ≈ dt per step.

    ``dt = 1/N`` visits every level; a larger dt respaces. ``variance``: 'posterior' (β̃, the
    default; guided-diffusion's 'fixedsmall'), 'beta' (β, 'fixedlarge') or 'learned' (the
    model's interpolation, 'learned_range'). ``clip_denoised``: x̂0 clipped to [−1, 1] inside
    the posterior mean (see ``ddpm_step``). ``starts``: optional per-sample start times on the
    level grid (randomized t*), as in ``reverse_sde``. ``guidance``: a mean shift
    s·Σ·guidance(x, *context) per step; ``context`` tensors are differentiated like the state.
    """
    _refuse_adjoint("ddpm", gradient)
    grid = schedule.grid(t_start, t_end, dt)
    step = ddpm_step(model, schedule, variance, guidance, guidance_scale,
                     clip_denoised=clip_denoised, grid=grid)
    return run_steps(step, x, grid, noise, gradient=gradient, callback=callback, starts=starts,
                     context=context)


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
