"""GDMP (Wang, Lyu, Lin, Dai & Fu 2022, "Guided Diffusion Model for Adversarial Purification"):
DDPM purification whose reverse steps are guided toward the input."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat
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

    continuous_time = False

    def describe_options(self) -> list[str]:
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
        """Purify ``x`` (N×C×H×W in [0, 1]); ``gradient``: exact | checkpoint."""
        check_images(x)
        s = self.settings
        noise = as_noise_source(noise, x)
        x_in = to_centered(x)
        t_star = self.schedule.snap(torch.tensor(s.t_star))
        x_t = add_noise(x_in, t_star, noise.randn_like(x_in), self.schedule)
        run = dict(t_start=float(t_star), dt=s.dt, noise=noise, gradient=gradient,
                   callback=callback)
        if s.guidance_scale == 0:
            return from_centered(ddpm(self.model, x_t, self.schedule, variance=self.variance,
                                      clip_denoised=s.clip_denoised, **run))
        grid = self.schedule.grid(float(t_star), 0.0, s.dt)
        draws = 2 if s.guidance == "mse" else 1                 # + ε' of the diffused input
        x_0 = run_steps(self.guided_step(grid), x_t, grid, MultiDraw(noise, draws),
                        gradient=gradient, callback=callback, context=(x_in,))
        return from_centered(x_0)

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
        return (f"t_star={s.t_star}, dt={s.dt}, guidance={s.guidance}, "
                f"guidance_scale={s.guidance_scale}, guidance_eps={s.guidance_eps:.4g}")
