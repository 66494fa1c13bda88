"""DiffPure (Nie et al., ICML 2022): diffuse to t*, then run a reverse sampler back to 0."""
from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_images, check_positive
from ..diffusion import (SAMPLERS, DiscreteSchedule, EpsModel, NoiseSource, VPSchedule, add_noise,
                         as_noise_source, sampler_options, uniform_like)
from ..diffusion.ddpm import DDPM_VARIANCES

DEFAULT_T_STAR = 0.1    # DiffPure's CIFAR-10 setting


class DiffPure(nn.Module):
    """Purify [0, 1] images with a pretrained eps-model (DiffPure Eqs. 3–5 and App. B.4, C.4).

    1. map x to [−1, 1] and diffuse it to t*: x(t*) = √ᾱ(t*) x + σ(t*) ε      (Eq. 3)
    2. run ``sampler`` from t* back to 0:
       - ``sde``: the reverse VP-SDE by Euler–Maruyama with step dt          (Eqs. 4–5)
       - ``ode``: the probability-flow VP-ODE by Euler                        (App. B.4, Eq. 28)
       - ``ddpm`` / ``ddim``: the discrete DDPM schedule, level n* = round(1000·t*), one step
         per dt (dt = 1e-3 visits every level, larger dt respaces); forward noising uses the
         discrete ᾱ_{n*}
       - ``ld``: no forward noising and no t*: Langevin dynamics from the input over t ∈ [0, 1]
         (App. B.4, Eq. 26)
    3. map back to [0, 1]; the final clamp to [0, 1] is part of the output contract.

    ``t_star_delta`` = Δ > 0 draws t* per sample uniformly from [t* − Δ, t* + Δ] (App. C.4):
    the samples share one grid from t* + Δ and each joins it when the grid reaches its own t*.
    Gradients flow through every step (no ``torch.no_grad`` anywhere).
    """

    def __init__(self, model: EpsModel, t_star: float | None = None, dt: float = 1e-3,
                 schedule: VPSchedule | DiscreteSchedule | None = None, sampler: str = "sde", *,
                 t_star_delta: float = 0.0, ddpm_variance: str | None = None,
                 ddim_eta: float | None = None, ld_sigma2: float | None = None,
                 ld_lambda: float | None = None, ld_eta: float | None = None,
                 ld_score_t: float | None = None):
        super().__init__()
        self.sampler = check_choice(sampler, tuple(SAMPLERS), "sampler")  # sde|ode|ld|ddpm|ddim
        spec = SAMPLERS[sampler]
        self.model = model                                  # eps(x_t, t), x_t in [−1, 1]
        self.t_star = resolve_t_star(sampler, t_star, t_star_delta)  # diffusion time (paper: 0.1)
        self.t_star_delta = float(t_star_delta)             # Δ of randomized t* (0: fixed)
        self.dt = check_positive(dt, "DiffPure dt")         # step (paper: 1e-3)
        self.schedule = schedule_for(spec.time, schedule,   # VP (β 0.1..20) or DDPM (1e-4..0.02)
                                     f"DiffPure: a {spec.time}-time sampler")
        self.options = sampler_options(sampler, dict(       # the sampler's own keywords
            ddpm_variance=ddpm_variance, ddim_eta=ddim_eta, ld_sigma2=ld_sigma2,
            ld_lambda=ld_lambda, ld_eta=ld_eta, ld_score_t=ld_score_t))
        if sampler == "ddpm":
            check_choice(self.options["variance"], DDPM_VARIANCES, "ddpm_variance")

    def forward(self, x: torch.Tensor, noise: NoiseSource | torch.Generator,
                gradient: str = "exact") -> torch.Tensor:
        """Purify ``x`` (N×C×H×W in [0, 1]); ``noise`` is a generator or a per-sample source.

        ``gradient`` is the solver-level gradient mode: exact | checkpoint | adjoint (the
        continuous-time samplers only).
        """
        check_images(x)
        noise = as_noise_source(noise, x)
        spec = SAMPLERS[self.sampler]
        x_centered = 2.0 * x - 1.0
        if not spec.uses_t_star:
            x_0 = spec.run(self.model, x_centered, self.schedule, dt=self.dt, noise=noise,
                           gradient=gradient, **self.options)
        else:
            t_stars = self.draw_t_stars(noise, x)
            x_t = add_noise(x_centered, t_stars, noise.randn_like(x_centered), self.schedule)
            starts = t_stars if self.t_star_delta > 0 else None
            x_0 = spec.run(self.model, x_t, self.schedule, t_start=self.grid_start, dt=self.dt,
                           noise=noise, gradient=gradient, starts=starts, **self.options)
        return ((x_0 + 1.0) / 2.0).clamp(0.0, 1.0)

    @property
    def grid_start(self) -> float:
        """Where the shared time grid begins: t* + Δ (on a level for discrete samplers)."""
        return float(self._on_schedule(torch.tensor(self.t_star + self.t_star_delta)))

    def draw_t_stars(self, noise: NoiseSource, x: torch.Tensor) -> torch.Tensor:
        """Per-sample t*: t* itself, or uniform on [t* − Δ, t* + Δ] from one draw per sample."""
        n = x.shape[0]
        if self.t_star_delta == 0:
            return self._on_schedule(torch.full((n,), self.t_star, dtype=torch.float64))
        u = uniform_like(noise, n)
        return self._on_schedule(self.t_star + self.t_star_delta * (2.0 * u - 1.0))

    def _on_schedule(self, t: torch.Tensor) -> torch.Tensor:
        return self.schedule.snap(t) if isinstance(self.schedule, DiscreteSchedule) else t.double()

    def extra_repr(self) -> str:
        if self.t_star is None:
            where = ""
        elif self.t_star_delta:
            where = f", t_star={self.t_star}±{self.t_star_delta}"
        else:
            where = f", t_star={self.t_star}"
        options = "".join(f", {k}={v}" for k, v in self.options.items())
        return f"sampler={self.sampler}{where}, dt={self.dt}{options}, schedule={self.schedule}"


def resolve_t_star(sampler: str, t_star: float | None, delta: float) -> float | None:
    """t* (default 0.1), checked so that [t* − Δ, t* + Δ] lies in (0, 1]; None for LD-SDE."""
    if not SAMPLERS[sampler].uses_t_star:
        if t_star is not None or delta:
            raise ValueError(f"sampler {sampler!r} has no t* (no forward noising); found "
                             f"t_star={t_star}, t_star_delta={delta}")
        return None
    t_star = DEFAULT_T_STAR if t_star is None else float(t_star)
    if not 0.0 <= delta < t_star <= 1.0 - delta:
        raise ValueError("DiffPure: expected 0 <= t_star_delta < t_star <= 1 - t_star_delta, "
                         f"found t_star={t_star}, t_star_delta={delta}")
    return t_star


def schedule_for(time: str, schedule: VPSchedule | DiscreteSchedule | None, who: str):
    """The given schedule, checked to be of ``time`` (continuous: VP, discrete: DDPM), or the
    default one of that kind."""
    kind = VPSchedule if time == "continuous" else DiscreteSchedule
    if schedule is None:
        return kind()
    if not isinstance(schedule, kind):
        raise TypeError(f"{who} expected a {kind.__name__}, found {type(schedule).__name__}")
    return schedule
