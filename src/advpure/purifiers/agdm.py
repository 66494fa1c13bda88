"""AGDM (Lin et al., "Robust Diffusion Models for Adversarial Purification"): DDPM purification
guided by a separately trained robust classifier φ."""
from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_images, check_positive
from ..diffusion import (DiscreteSchedule, EpsModel, NoiseSource, VPSchedule, add_noise,
                         as_noise_source, ddpm, reverse_sde)
from ..diffusion.ddpm import DDPM_VARIANCES
from ..diffusion.samplers import Callback
from ..guidance import GUIDANCE_GRADS, FromCentered, GuidedEps
from ..guidance.robust import DISTANCES, LABEL_SOURCES, RobustGuidance
from .diffpure import schedule_for

AGDM_FORMS = ("discrete", "continuous")
DEFAULT_T_STAR = 0.07     # AGDM: t* = 70 of 1000 levels


class AGDM(nn.Module):
    """Purify [0, 1] images by the robustly guided reverse process (AGDM Algorithm 1, Eq. 18).

    With x' the input in [−1, 1] and p' = softmax φ(x'), ŷ = argmax p' (``guidance_label=
    "input"``; ``"state"`` takes φ's prediction at each x_t instead), D = ``guidance_distance``:

    ``discrete`` (Algorithm 1, the default): x_{t*} = √ᾱ_{t*} x' + √(1 − ᾱ_{t*}) ε (Eq. 7) at
    level round(1000·t*), then DDPM steps x_{t−1} ~ N(μ + sΣ∇log p_φ(ŷ|x_t) − sΣ∇D(p', p_φ(x_t)),
    Σ), Σ = σ_t² I the DDPM variance (``ddpm_variance``), both gradients taken at x_t.
    ``continuous`` (Eq. 18): the same forward noising on the VP schedule, then the reverse VP-SDE
    with score s_θ + s(a_φ + b_φ), a_φ = ∇log p_φ(ŷ|x), b_φ = −∇D(p', p_φ(x)).

    φ sees the states as (x_t + 1)/2 without clamping and has no time input (as in the paper).
    s = 0 is plain DDPM (or reverse-SDE) purification. ``guidance_grad``: second_order
    differentiates both guidance terms in backward (x_t and x' through p'), first_order treats the
    guidance as a constant.
    """

    def __init__(self, model: EpsModel, classifier: nn.Module, t_star: float | None = None,
                 dt: float = 1e-3, schedule: VPSchedule | DiscreteSchedule | None = None, *,
                 form: str = "discrete", guidance_scale: float = 1.0,
                 guidance_distance: str = "kl", guidance_label: str = "input",
                 guidance_grad: str = "second_order",
                 ddpm_variance: str = "posterior"):
        super().__init__()
        self.form = check_choice(form, AGDM_FORMS, "AGDM form")     # discrete | continuous
        self.t_star = agdm_t_star(t_star)                         # 0.07 = level 70
        self.dt = check_positive(dt, "AGDM dt")                   # 1e-3: every level
        self.schedule = schedule_for(form, schedule, f"AGDM: the {form} form")   # time = form
        self.guidance_scale = _check_scale(guidance_scale)        # s (paper: 1)
        self.ddpm_variance = check_choice(ddpm_variance, DDPM_VARIANCES, "ddpm_variance")
        self.model = model                                        # eps(x_t, t), x_t in [−1, 1]
        self.classifier = classifier                              # φ: [0, 1] images -> logits
        self.guidance = RobustGuidance(
            FromCentered(classifier),
            check_choice(guidance_distance, DISTANCES, "guidance_distance"),
            check_choice(guidance_label, LABEL_SOURCES, "guidance_label"),
            second_order=check_choice(guidance_grad, GUIDANCE_GRADS, "guidance_grad")
            == "second_order")

    def forward(self, x: torch.Tensor, noise: NoiseSource | torch.Generator,
                gradient: str = "exact", callback: Callback | None = None) -> torch.Tensor:
        """Purify ``x`` (N×C×H×W in [0, 1]); ``gradient``: exact | checkpoint (| adjoint for
        the continuous form)."""
        check_images(x)
        noise = as_noise_source(noise, x)
        t_star = self.schedule.snap(torch.tensor(self.t_star)) if self.form == "discrete" \
            else torch.tensor(self.t_star, dtype=torch.float64)
        x_t = add_noise(2.0 * x - 1.0, t_star, noise.randn_like(x), self.schedule)   # Eq. 7
        run = dict(t_start=float(t_star), dt=self.dt, noise=noise, gradient=gradient,
                   callback=callback, context=self._reference(x))
        guided = self.guidance_scale > 0
        if self.form == "discrete":                                   # Algorithm 1
            x_0 = ddpm(self.model, x_t, self.schedule, variance=self.ddpm_variance,
                       guidance=self.guidance if guided else None,
                       guidance_scale=self.guidance_scale, **run)
        else:                                                         # Eq. 18
            model = GuidedEps(self.model, self.guidance, self.schedule, self.guidance_scale) \
                if guided else self.model
            x_0 = reverse_sde(model, x_t, self.schedule, **run)
        return ((x_0 + 1.0) / 2.0).clamp(0.0, 1.0)

    def _reference(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(p', ŷ): φ's softmax prediction on the input (differentiable) and its label — the
        context of every guided step; nothing without guidance."""
        if self.guidance_scale == 0:
            return ()
        probs = torch.softmax(self.classifier(x), dim=1)
        return probs, probs.argmax(dim=1).detach()

    def extra_repr(self) -> str:
        return (f"form={self.form}, t_star={self.t_star}, dt={self.dt}, "
                f"guidance_scale={self.guidance_scale}, ddpm_variance={self.ddpm_variance}")


def agdm_t_star(t_star: float | None) -> float:
    t_star = DEFAULT_T_STAR if t_star is None else float(t_star)
    if not 0.0 < t_star <= 1.0:
        raise ValueError(f"AGDM: expected 0 < t_star <= 1, found {t_star}")
    return t_star


def _check_scale(scale: float) -> float:
    if not scale >= 0.0:
        raise ValueError(f"AGDM: expected guidance_scale (s) >= 0, found {scale}")
    return float(scale)

