"""GDMP (Wang, Lyu, Lin, Dai & Fu 2022, "Guided Diffusion Model for Adversarial Purification"):
DDPM purification whose reverse steps are guided toward the input."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat, model_validator
from torch import nn

from .._checks import check_images
from ..diffusion import DiscreteSchedule, EpsModel, NoiseSource, add_noise, as_noise_source, ddpm
from ..diffusion.ddpm import DDPM_VARIANCES, check_variance, ddpm_step
from ..diffusion.samplers import Callback, run_steps
from ..guidance import GUIDANCE_GRADS
from ..guidance.guided import differentiable_copy
from ..metrics import ssim
from .base import (Models, PurifierSettings, check_models, from_centered, module_settings,
                   to_centered)
from .diffpure import schedule_for
from .hetero import MultiDraw

GDMP_GUIDANCES = ("mse", "ssim")
VARIANTS = ("paper", "authors-code")
AUTHORS_COMMIT = "1010822129f2f2e5e882179b49fc60259c66a259"    # Ka1b0/DiffHammer
AUTHORS_CONSTANT = 2e-3             # defense/diffpure.py 44: k = σ_n·2e-3·√(1−ᾱ)/(ε√ᾱ)
AUTHORS_DEFAULTS = {"t_star": 0.036, "dt": 0.006, "rounds": 4,        # config.py 'GUIDED'
                    "guidance_eps": 8 / 255}
PAPER_ONLY = {"guidance", "guidance_scale", "guidance_grad", "ddpm_variance", "clip_denoised"}


class GDMPSettings(PurifierSettings):
    """GDMP's options: the distance that guides, and the scale schedule's a and ε."""

    name: Literal["gdmp"] = "gdmp"
    t_star: float = Field(0.1, gt=0.0, le=1.0, description="diffusion time t* (level 1000·t*)")
    guidance: Literal[GDMP_GUIDANCES] = Field("mse", description="mse (to the input diffused "
                                              "to the step's level) | ssim (to the input)")
    guidance_scale: NonNegativeFloat = Field(1000.0, description="a of the scale schedule "
                                             "s_t = a·√(1−ᾱ_t) / (⅔ε·√ᾱ_t) (0: plain DDPM)")
    guidance_eps: PositiveFloat = Field(4 / 255, description="ε of the scale schedule: the "
                                        "perturbation size it assumes, in [0, 1] units")
    guidance_grad: Literal[GUIDANCE_GRADS] = Field("second_order", description="what attacks "
                                                   "differentiate through the guidance: "
                                                   "second_order | first_order (a constant)")
    ddpm_variance: Literal[DDPM_VARIANCES] = Field("posterior", description="the step's "
                                                   "variance Σ: posterior β̃ | beta β | learned")
    clip_denoised: bool = Field(False, description="clip x̂0 to [−1, 1] in the posterior mean")
    variant: Literal[VARIANTS] = Field("paper", description="paper (Eqs. 8–10; DiffBreak's "
                                       "code) | authors-code (Ka1b0/DiffHammer @ 1010822: 4 "
                                       "rounds of level 36 in steps of 6, shift −k(x − ref), "
                                       "uniform reference noise)")

    continuous_time = False
    runs_rounds: ClassVar[bool] = True      # ``rounds`` in [−1, 1], unclamped between them

    @model_validator(mode="before")
    @classmethod
    def _authors_defaults(cls, data):
        """The authors-code variant's level, step, rounds and ε default to upstream's."""
        if isinstance(data, dict) and data.get("variant") == "authors-code":
            return {**AUTHORS_DEFAULTS, **data}
        return data

    @model_validator(mode="after")
    def _variant_options(self):
        foreign = PAPER_ONLY if self.variant == "authors-code" else set()
        given = sorted(f for f in foreign if getattr(self, f) != self.default(f))
        if given:
            raise ValueError(f"gdmp variant {self.variant!r} takes no option {', '.join(given)}"
                             " (options of the other variant)")
        return self

    def unused_options(self) -> set[str]:
        return PAPER_ONLY if self.variant == "authors-code" else set()

    def describe_options(self) -> list[str]:
        if self.variant == "authors-code":
            return [f"t*={self.t_star:g}", f"dt={self.dt:g}", f"ε={self.guidance_eps:.3g}",
                    "authors' code"]
        parts = [f"t*={self.t_star:g}", f"{self.guidance} a={self.guidance_scale:g}",
                 f"dt={self.dt:g}"]
        shown = {"guidance_eps": "ε", "ddpm_variance": "variance", "clip_denoised": "clip x̂0"}
        parts += [f"{shown[k]}={v:.3g}" if isinstance(v, float) else f"{shown[k]}={v}"
                  for k, v in self.changed().items() if k in shown]
        if self.guidance_grad == "first_order":
            parts.append("first-order guidance gradient")
        return parts

    def build(self, models: Models) -> GDMP:
        return GDMP(models.eps, self)


def guidance_scale_at(schedule: DiscreteSchedule, t: float, scale: float, eps: float) -> float:
    """GDMP's scale schedule s_t = √(1 − ᾱ_t) / (m √ᾱ_t) with m = (2ε/3) / a: ε in [0, 1] units
    is 2ε on the model's [−1, 1] scale, and a perturbation within 3 standard deviations of
    the guidance is tolerated (the paper's choice; its authors' code, as DiffBreak runs it)."""
    a_bar = float(schedule.alpha_bar(t))
    m = (2.0 * eps / 3.0) / scale
    return (1.0 - a_bar) ** 0.5 / (m * a_bar ** 0.5)


def similarity_gradient(kind: str, x: torch.Tensor, reference: torch.Tensor,
                        second_order: bool) -> torch.Tensor:
    """∇_x of the similarity of the state x to the reference: −mean((x − ref)²) per image
    (``mse``) or SSIM(x, ref) (``ssim``). ``second_order``: keep the graph when x or the
    reference is being differentiated (the attack's gradient through the guidance)."""
    keep_graph = second_order and torch.is_grad_enabled() and (
        x.requires_grad or reference.requires_grad)
    with torch.enable_grad():
        x_in = differentiable_copy(x, keep_graph)
        ref = reference if keep_graph else reference.detach()
        if kind == "mse":
            similarity = -(x_in - ref).pow(2).flatten(1).mean(dim=1)
        else:
            similarity = ssim(x_in, ref)
        (grad,) = torch.autograd.grad(similarity.sum(), x_in, create_graph=keep_graph)
    return grad


class GDMP(nn.Module):
    """Purify [0, 1] images by guided DDPM (GDMP, Wang et al. 2022, Eqs. 8–10).

    With x' the input in [−1, 1]: x_{n*} = √ᾱ_{n*} x' + √(1 − ᾱ_{n*}) ε at level
    n* = round(1000·t*), then DDPM steps whose mean is shifted toward the input,

        x_{n−1} ~ N(μ_θ(x_n) + s_n Σ ∇_{x_n} sim(x_n, x'_n), Σ),

    Σ the step's variance, s_n the scale schedule (``guidance_scale_at``), and
    - ``mse``: sim = −‖x_n − x'_n‖² / d with x'_n = √ᾱ_n x' + √(1 − ᾱ_n) ε' the input diffused
      to the step's level with a fresh ε' (one more noise draw per step);
    - ``ssim``: sim = SSIM(x_n, x').
    The per-image mean over pixels keeps the guidance independent of the batch (DiffBreak's
    implementation averages over the batch as well). a = 0 is plain DDPM purification.
    ``guidance_grad='second_order'`` differentiates the guidance in backward (through x_n and
    through x'), as COUP's and AGDM's are; ``first_order`` treats it as a constant.

    Options: ``settings`` (a ``GDMPSettings``) or its fields as keywords.
    """

    def __init__(self, model: EpsModel, settings: GDMPSettings | None = None, *,
                 schedule: DiscreteSchedule | None = None, **options):
        super().__init__()
        s = self.settings = module_settings(GDMPSettings, settings, options)
        check_models(type(self).__name__, model)
        self.model = model                                   # eps(x_t, t), x_t in [−1, 1]
        self.schedule = schedule_for("discrete", schedule, "GDMP")
        self.variance = check_variance(model, s.ddpm_variance)

    def forward(self, x: torch.Tensor, noise: NoiseSource | torch.Generator,
                gradient: str = "exact", callback: Callback | None = None) -> torch.Tensor:
        """Purify ``x`` (N×C×H×W in [0, 1]) in ``rounds`` rounds, the state kept in [−1, 1]
        between them (unclamped, as the authors' code); ``gradient``: exact | checkpoint."""
        check_images(x)
        noise = as_noise_source(noise, x)
        state = to_centered(x)
        for _ in range(self.settings.rounds):
            state = self.one_round(state, noise, gradient, callback)
        return from_centered(state)

    def one_round(self, x_in: torch.Tensor, noise: NoiseSource, gradient: str,
                  callback: Callback | None) -> torch.Tensor:
        """Noise the round's input x_in to level t* with fresh ε, then the guided steps back
        (the paper's guided toward x_in; the authors' code toward the noised x_{t*})."""
        s = self.settings
        t_star = self.schedule.snap(torch.tensor(s.t_star))
        x_t = add_noise(x_in, t_star, noise.randn_like(x_in), self.schedule)
        grid = self.schedule.grid(float(t_star), 0.0, s.dt)
        run = dict(gradient=gradient, callback=callback)
        if s.variant == "authors-code":                      # defense/diffpure.py 79-96
            return run_steps(self.authors_step, x_t, grid, MultiDraw(noise, 2),
                             context=(x_t,), **run)
        if s.guidance_scale == 0:
            return ddpm(self.model, x_t, self.schedule, variance=self.variance,
                        clip_denoised=s.clip_denoised, t_start=float(t_star), dt=s.dt,
                        noise=noise, **run)
        draws = 2 if s.guidance == "mse" else 1                 # + ε' of the diffused input
        return run_steps(self.guided_step(grid), x_t, grid, MultiDraw(noise, draws),
                         context=(x_in,), **run)

    def authors_shift(self, t: float, t_next: float) -> float:
        """k_n = σ_n · 2e-3 · √(1 − ᾱ_n) / (ε √ᾱ_n), σ_n the step's noise scale (η = 1) and ε
        the attack's (defense/diffpure.py 42-44)."""
        a, a_next = float(self.schedule.alpha_bar(t)), float(self.schedule.alpha_bar(t_next))
        sigma = ((1 - a / a_next) * (1 - a_next) / (1 - a)) ** 0.5
        return sigma * AUTHORS_CONSTANT * (1 - a) ** 0.5 / (self.settings.guidance_eps * a ** 0.5)

    def authors_step(self, x: torch.Tensor, t: float, t_next: float, z: torch.Tensor,
                     x_start: torch.Tensor) -> torch.Tensor:
        """x_{n−1} = c_x x_n + c_ε ε_θ(x_n, n) + σ_n z − k_n (x_n − ref_n), ref_n = √ᾱ_n x_start +
        √(1 − ᾱ_n) u with u uniform on [0, 1) (``torch.rand_like`` upstream; here Φ of the
        step's second normal draw) and x_start the round's noised input (defense/diffpure.py
        57-65, 74-77)."""
        a, a_next = self.schedule.alpha_bar(t), self.schedule.alpha_bar(t_next)
        sigma2 = (1 - a / a_next) * (1 - a_next) / (1 - a)
        c_x = (a_next / a).sqrt()
        c_eps = (1 - a_next - sigma2).sqrt() - c_x * (1 - a).sqrt()
        eps = self.model(x, torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype))
        uniform = 0.5 * (1.0 + torch.erf(z[1] / 2.0 ** 0.5))
        reference = a.sqrt().to(x) * x_start + (1 - a).sqrt().to(x) * uniform
        shift = self.authors_shift(t, t_next)
        return (c_x.to(x) * x + c_eps.to(x) * eps + sigma2.sqrt().to(x) * z[0]
                - shift * (x - reference))

    def guided_step(self, grid: torch.Tensor):
        """The DDPM step with GDMP's guidance: z holds the step's noise (and ε' for mse)."""
        s = self.settings
        second_order = s.guidance_grad == "second_order"
        learned_grid = grid if self.variance == "learned" else None

        def step(x: torch.Tensor, t: float, t_next: float, z: torch.Tensor,
                 x_in: torch.Tensor) -> torch.Tensor:
            if s.guidance == "mse":
                reference = add_noise(x_in, torch.tensor(t, dtype=torch.float64), z[1],
                                      self.schedule)
            else:
                reference = x_in
            scale = guidance_scale_at(self.schedule, t, s.guidance_scale, s.guidance_eps)

            def guidance(state: torch.Tensor) -> torch.Tensor:
                return similarity_gradient(s.guidance, state, reference, second_order)
            ancestral = ddpm_step(self.model, self.schedule, self.variance, guidance, scale,
                                  clip_denoised=s.clip_denoised, grid=learned_grid)
            return ancestral(x, t, t_next, z[0])
        return step

    def extra_repr(self) -> str:
        s = self.settings
        if s.variant == "authors-code":
            return (f"authors-code, t_star={s.t_star}, dt={s.dt}, rounds={s.rounds}, "
                    f"eps={s.guidance_eps:.4g}")
        return (f"t_star={s.t_star}, dt={s.dt}, guidance={s.guidance}, "
                f"guidance_scale={s.guidance_scale}, guidance_eps={s.guidance_eps:.4g}")
