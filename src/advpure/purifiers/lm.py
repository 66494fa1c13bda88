"""LM: purification by likelihood maximisation (Chen et al. 2024, as DiffHammer's code runs it:
Ka1b0/DiffHammer @ 1010822, ``defense/llhd_maximize.py``, the defense the DiffHammer paper
attacks as "LM")."""
from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from torch import nn

from .._checks import check_images
from ..diffusion import EpsModel, NoiseSource, VPSchedule, as_noise_source
from ..diffusion.samplers import Callback, run_steps
from ..guidance.guided import differentiable_copy
from .base import Models, PurifierSettings, check_models, from_centered, module_settings, \
    to_centered


class LMSettings(PurifierSettings):
    """LM's options (defaults: config.py, DEFENSE.LLHD_MAXIMIZE)."""

    name: Literal["lm"] = "lm"
    lm_steps: PositiveInt = Field(5, description="Adam steps that lower the denoising error "
                                  "(N_LM)")
    lm_lr: PositiveFloat = Field(0.1, description="Adam's learning rate on the [−1, 1] image")
    sigma_min: PositiveFloat = Field(0.4, description="the noise level σ of each step is "
                                     "uniform on [sigma_min, sigma_max] (EDM's σ: x + σε)")
    sigma_max: PositiveFloat = Field(0.6, description="upper end of σ")
    lm_radius: PositiveFloat = Field(100.0, description="ℓ2 radius around the input, in [0, 1] "
                                     "units (the code's EPS; 100: no bound in effect)")
    beta1: float = Field(0.9, ge=0.0, lt=1.0, description="Adam's β1")
    beta2: float = Field(0.999, ge=0.0, lt=1.0, description="Adam's β2")

    continuous_time = False
    has_solver: ClassVar[bool] = False      # no dt: the table does not carry one over

    @model_validator(mode="after")
    def _sigmas_ordered(self):
        if not self.sigma_min <= self.sigma_max:
            raise ValueError(f"lm: expected sigma_min <= sigma_max, found {self.sigma_min}, "
                             f"{self.sigma_max}")
        if self.dt != self.default("dt"):
            raise ValueError(f"lm takes no dt (it runs lm_steps Adam steps, no solver), found "
                             f"dt={self.dt:g}")
        return self

    def unused_options(self) -> set[str]:
        return {"dt"}                                      # no solver

    def time_span(self) -> float | None:
        return None

    def describe_options(self) -> list[str]:
        parts = [f"{self.lm_steps} steps", f"lr={self.lm_lr:g}",
                 f"σ∈[{self.sigma_min:g}, {self.sigma_max:g}]"]
        return parts + ([f"ℓ2 ≤ {self.lm_radius:g}"] if self.lm_radius < 100 else [])

    def build(self, models: Models) -> LM:
        return LM(models.eps, self)


def vp_time_of_sigma(sigma: torch.Tensor, schedule: VPSchedule) -> torch.Tensor:
    """The VP time t whose ᾱ(t) = 1/(1 + σ²): x + σε scaled by √ᾱ is the VP state x_t
    (EDM's VP preconditioning); solves β_min t + ½(β_max − β_min) t² = log(1 + σ²)."""
    spread = schedule.beta_max - schedule.beta_min
    return (torch.sqrt(schedule.beta_min ** 2 + 2 * spread * torch.log1p(sigma ** 2))
            - schedule.beta_min) / spread


class LM(nn.Module):
    """Purify [0, 1] images by a few Adam steps that lower the eps-model's denoising error.

    On the [−1, 1] image x (x' its input), step k = 0 … K−1 draws σ ~ U[σ_min, σ_max] and ε per
    image and takes g = ∇_x ℓ(x), ℓ = mean_pixels (D(x + σε; σ) − x)², D the denoiser of the
    eps-model: D = x̃ − σ·ε_θ(√ᾱ x̃, t(σ)) with x̃ = x + σε and ᾱ = 1/(1 + σ²) (so ℓ = σ²‖ε −
    ε_θ‖²/d). Then, as the code writes Adam (llhd_maximize.py 21-29):

        m ← (β1 m + (1 − β1) g) / (1 − β1^(k+1)),  v ← (β2 v + (1 − β2) g²) / (1 − β2^(k+1)),
        x ← Π_{‖x − x'‖₂ ≤ 2r} (x − lr · m / (√v + 1e-8)),

    the bias-corrected moments stored back (the code's; textbook Adam keeps them raw), and the
    output is (x + 1)/2 clamped to [0, 1]. The code averages ℓ over the whole batch; here each
    image has its own mean, so an image does not depend on its batch (Adam is invariant to the
    scale up to its 1e-8).

    Under attack (``exact``) the whole purification is differentiated: through every step's g,
    a Hessian-vector product of ℓ (``create_graph``), and through m and v. The code's
    backward keeps m, v and earlier steps' g constant (its ``gradient``: a Hessian-vector
    product per step); ``checkpoint`` gives the same gradient as ``exact`` with one step's
    graph at a time. Options: ``settings`` (an ``LMSettings``) or its fields as keywords.
    """

    def __init__(self, model: EpsModel, settings: LMSettings | None = None, *,
                 schedule: VPSchedule | None = None, **options):
        super().__init__()
        self.settings = module_settings(LMSettings, settings, options)
        check_models(type(self).__name__, model)
        self.model = model                                   # eps(x_t, t), x_t in [−1, 1]
        self.schedule = schedule or VPSchedule()             # t(σ) of the eps-model

    def denoising_error(self, x: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor
                        ) -> torch.Tensor:
        """ℓ per image: mean over pixels of (D(x + σε; σ) − x)²."""
        s = sigma.view(-1, *([1] * (x.dim() - 1)))
        noised = x + s * eps
        scale = (1 + s ** 2).rsqrt()                                  # √ᾱ
        predicted = self.model(scale * noised, vp_time_of_sigma(sigma, self.schedule))
        return (noised - s * predicted - x).pow(2).flatten(1).mean(dim=1)

    def forward(self, x: torch.Tensor, noise: NoiseSource | torch.Generator,
                gradient: str = "exact", callback: Callback | None = None) -> torch.Tensor:
        """Purify ``x`` (N×C×H×W in [0, 1]); ``gradient``: exact | checkpoint."""
        check_images(x)
        noise = as_noise_source(noise, x)
        x_in = to_centered(x)
        state = torch.cat([x_in, torch.zeros_like(x_in), torch.zeros_like(x_in)], dim=1)
        steps = torch.arange(self.settings.lm_steps + 1, dtype=torch.float64)
        state = run_steps(self.adam_step, state, steps, noise, gradient=gradient,
                          callback=callback, context=(x_in,))
        return from_centered(state[:, :x.shape[1]])

    def adam_step(self, state: torch.Tensor, k: float, k_next: float, z: torch.Tensor,
                  x_in: torch.Tensor) -> torch.Tensor:
        """One step on the packed state (x, m, v) along the channels; z's first channels are
        ε and its next one, at pixel (0, 0), gives σ's uniform draw u = Φ(z)."""
        s, c = self.settings, x_in.shape[1]
        x, m, v = state[:, :c], state[:, c:2 * c], state[:, 2 * c:]
        u = 0.5 * (1.0 + torch.erf(z[:, c, 0, 0].double() / math.sqrt(2.0)))
        sigma = (s.sigma_min + (s.sigma_max - s.sigma_min) * u).to(x.dtype)
        keep_graph = torch.is_grad_enabled() and state.requires_grad
        with torch.enable_grad():
            x_grad = differentiable_copy(x, keep_graph)
            loss = self.denoising_error(x_grad, sigma, z[:, :c])
            (g,) = torch.autograd.grad(loss.sum(), x_grad, create_graph=keep_graph)
        step = int(k) + 1
        m = (s.beta1 * m + (1 - s.beta1) * g) / (1 - s.beta1 ** step)
        v = (s.beta2 * v + (1 - s.beta2) * g ** 2) / (1 - s.beta2 ** step)
        x = self.within_radius(x - s.lm_lr * m / (v.sqrt() + 1e-8), x_in)
        return torch.cat([x, m, v], dim=1)

    def within_radius(self, x: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
        """Π onto the ℓ2 ball of radius 2r around the input ([−1, 1] units), the code's
        rescale by min(2r/‖δ‖, 1) with the factor held constant in backward."""
        delta = x - x_in
        norm = delta.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))
        factor = (2 * self.settings.lm_radius / norm.clamp_min(1e-30)).clamp(max=1.0)
        return x_in + factor.detach() * delta

    def extra_repr(self) -> str:
        s = self.settings
        return (f"steps={s.lm_steps}, lr={s.lm_lr}, sigma=[{s.sigma_min}, {s.sigma_max}], "
                f"radius={s.lm_radius}")
