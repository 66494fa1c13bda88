"""DiffPure (Nie et al., ICML 2022): diffuse to t*, then run a reverse sampler back to 0."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    model_validator,
)
from torch import nn

from .._checks import check_images
from ..diffusion import (
    NOISINGS,
    SAMPLERS,
    DiscreteSchedule,
    EpsModel,
    NoiseSource,
    VPSchedule,
    add_noise,
    as_noise_source,
    discrete_levels,
    uniform_like,
)
from ..diffusion.catalog import SAMPLER_OPTIONS
from ..diffusion.ddpm import DDPM_VARIANCES, check_variance
from ..diffusion.langevin import LD_DEFAULTS
from ..diffusion.samplers import GRIDS, Callback
from .base import (Models, PurifierSettings, check_models, from_centered, module_settings,
                   to_centered)


class DiffPureSettings(PurifierSettings):
    """DiffPure's options; a sampler's own options (``ddim_eta``, ``ld_*``, ``ddpm_variance``)
    belong to that sampler, and setting one for another sampler is an error."""

    name: Literal["diffpure"] = "diffpure"
    sampler: Literal[tuple(SAMPLERS)] = Field("sde", description="reverse process: "
                                              + " | ".join(SAMPLERS))
    t_star: float = Field(0.1, gt=0.0, le=1.0, description="diffusion time t* (DiffPure's "
                          "CIFAR-10 setting); ddpm/ddim: level 1000·t*; ld has none")
    t_star_delta: NonNegativeFloat = Field(0.0, description="randomized t*: uniform on t* ± Δ, "
                                           "per image (App. C.4)")
    ddpm_variance: Literal[DDPM_VARIANCES] = Field("posterior", description="ddpm: the step's "
                                                   "variance, posterior β̃ | beta β | learned "
                                                   "(the model's, Nichol & Dhariwal Eq. 15)")
    clip_denoised: bool = Field(False, description="ddpm: clip x̂0 to [−1, 1] in the posterior "
                                "mean (guided-diffusion's clip_denoised, on in DiffPure's code)")
    t_end: NonNegativeFloat = Field(0.0, description="sde, ode, ld: where the process stops "
                                    "short of its end (the paper: 0; DiffPure's code: 1e-5)")
    noising: Literal[NOISINGS] = Field("continuous", description="sde, ode: the forward "
                                       "noising's ᾱ, continuous ᾱ(t*) (the paper's Eq. 3) | "
                                       "discrete ᾱ of level 1000·t* (DiffPure's code)")
    grid: Literal[GRIDS] = Field("uniform", description="sde, ode, ld: equal steps of ≈ dt | "
                                 "authors-code (torchsde's / torchdiffeq's fixed steps of dt, "
                                 "a shorter last one, float32 times; exact and checkpoint)")
    ddim_eta: NonNegativeFloat = Field(0.0, description="ddim: η (0: deterministic)")
    ld_sigma2: PositiveFloat = Field(LD_DEFAULTS["sigma2"], description="ld: σ² of the "
                                     "Langevin attraction to the input (Eq. 26)")
    ld_lambda: PositiveFloat = Field(LD_DEFAULTS["lam"], description="ld: λ, the Langevin step "
                                     "weight (Eq. 26)")
    ld_eta: NonNegativeFloat = Field(LD_DEFAULTS["eta"], description="ld: η, the noise scale "
                                     "(Eq. 26)")
    ld_score_t: PositiveFloat = Field(LD_DEFAULTS["score_t"], description="ld: the time at "
                                      "which the score 'at 0' is taken")
    ld_span: PositiveFloat = Field(1.0, description="ld: the length of the integration "
                                   "interval (the paper: 1; DiffPure's code: T/1000 for --t T, "
                                   "with its λ and dt as they are)")

    def time_span(self) -> float | None:
        return self.t_star if SAMPLERS[self.sampler].uses_t_star else None

    def unused_options(self) -> set[str]:
        """The options the sampler does not take: other samplers' (and t*, Δ for ld)."""
        unused = {k for k, owners in SAMPLER_OPTIONS.items() if self.sampler not in owners}
        return unused | (set() if SAMPLERS[self.sampler].uses_t_star else
                         {"t_star", "t_star_delta"})

    @model_validator(mode="after")
    def _options_of_the_sampler(self):
        stray = sorted(self.model_fields_set & self.unused_options())
        own = ", ".join(SAMPLERS[self.sampler].options) or "none"
        if any(k in SAMPLER_OPTIONS for k in stray):
            found = ", ".join(f"{k}={getattr(self, k)!r} (sampler "
                              f"{'/'.join(SAMPLER_OPTIONS[k])!r})"
                              for k in stray if k in SAMPLER_OPTIONS)
            raise ValueError(f"sampler {self.sampler!r} takes options {own}, found {found}")
        if stray:
            raise ValueError(f"sampler {self.sampler!r} has no t* (no forward noising); found "
                             + ", ".join(f"{k}={getattr(self, k)}" for k in stray))
        delta, end = self.t_star_delta, self.t_end
        if self.sampler == "ld" and not end < self.ld_span:
            raise ValueError(f"DiffPure: expected t_end < ld_span, found t_end={end}, "
                             f"ld_span={self.ld_span}")
        if SAMPLERS[self.sampler].uses_t_star and not end + delta < self.t_star <= 1.0 - delta:
            raise ValueError("DiffPure: expected t_end + t_star_delta < t_star <= 1 - "
                             f"t_star_delta, found t_star={self.t_star}, t_star_delta={delta}, "
                             f"t_end={end}")
        return self

    def runs_continuous_time(self) -> bool:
        return SAMPLERS[self.sampler].time == "continuous"

    def label(self) -> str:
        return "diffpure" if self.sampler == "sde" else f"diffpure-{self.sampler}"

    def describe_options(self) -> list[str]:
        parts = []
        if SAMPLERS[self.sampler].uses_t_star:
            delta = f"±{self.t_star_delta:g}" if self.t_star_delta else ""
            parts.append(f"t*={self.t_star:g}{delta}")
        parts.append(f"dt={self.dt:g}")
        own = {k: v for k, v in self.changed().items() if k in SAMPLER_OPTIONS}
        return parts + [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in own.items()]

    def build(self, models: Models) -> DiffPure:
        return DiffPure(models.eps, self)


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

    Options: ``settings`` (a ``DiffPureSettings``) or its fields as keywords, e.g.
    ``DiffPure(model, t_star=0.1, dt=1e-3, sampler="ddpm")``.
    """

    def __init__(self, model: EpsModel, settings: DiffPureSettings | None = None, *,
                 schedule: VPSchedule | DiscreteSchedule | None = None, **options):
        super().__init__()
        s = self.settings = module_settings(DiffPureSettings, settings, options)
        spec = SAMPLERS[s.sampler]
        check_models(type(self).__name__, model)
        self.model = model                                  # eps(x_t, t), x_t in [−1, 1]
        self.sampler = s.sampler                            # sde | ode | ld | ddpm | ddim
        self.t_star = s.t_star if spec.uses_t_star else None  # diffusion time (paper: 0.1)
        self.t_star_delta = s.t_star_delta                  # Δ of randomized t* (0: fixed)
        self.dt = s.dt                                      # step (paper: 1e-3)
        self.schedule = schedule_for(spec.time, schedule,   # VP (β 0.1..20) or DDPM (1e-4..0.02)
                                     f"DiffPure: a {spec.time}-time sampler")
        self.options = {keyword: getattr(s, name)           # the sampler function's keywords
                        for name, keyword in spec.options.items() if keyword is not None}
        self.noising = s.noising                            # continuous ᾱ(t*) | discrete ᾱ_n*
        if s.sampler == "ddpm":
            check_variance(model, s.ddpm_variance)

    def forward(self, x: torch.Tensor, noise: NoiseSource | torch.Generator,
                gradient: str = "exact", callback: Callback | None = None) -> torch.Tensor:
        """Purify ``x`` (N×C×H×W in [0, 1]); ``noise`` is a generator or a per-sample source.

        ``gradient`` is the solver-level gradient mode: exact | checkpoint | adjoint (the
        continuous-time samplers only); ``callback(i, t, x_t)`` sees every state, x_t in
        [−1, 1].
        """
        check_images(x)
        noise = as_noise_source(noise, x)
        spec = SAMPLERS[self.sampler]
        x_centered = to_centered(x)
        run = dict(dt=self.dt, noise=noise, gradient=gradient, callback=callback, **self.options)
        if not spec.uses_t_star:
            x_0 = spec.run(self.model, x_centered, self.schedule, **run)
        else:
            t_stars = self.draw_t_stars(noise, x)
            x_t = add_noise(x_centered, t_stars, noise.randn_like(x_centered),
                            self.noising_schedule)
            starts = t_stars if self.t_star_delta > 0 else None
            x_0 = spec.run(self.model, x_t, self.schedule, t_start=self.grid_start,
                           starts=starts, **run)
        return from_centered(x_0)

    @property
    def noising_schedule(self) -> VPSchedule | DiscreteSchedule:
        """Where the forward noising takes ᾱ: the sampler's schedule, or with ``noising=
        "discrete"`` the DDPM levels its VP schedule discretises, ᾱ of level round(1000·t*)
        (DiffPure's runners: ``a[t − 1]``, diffpure_sde.py 222-223, diffpure_ode.py 214-215)."""
        if self.noising == "discrete" and isinstance(self.schedule, VPSchedule):
            return discrete_levels(self.schedule)
        return self.schedule

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


def schedule_for(time: str, schedule: VPSchedule | DiscreteSchedule | None, who: str):
    """The given schedule, checked to be of ``time`` (continuous: VP, discrete: DDPM), or the
    default one of that kind."""
    kind = VPSchedule if time == "continuous" else DiscreteSchedule
    if schedule is None:
        return kind()
    if not isinstance(schedule, kind):
        raise TypeError(f"{who} expected a {kind.__name__}, found {type(schedule).__name__}")
    return schedule
