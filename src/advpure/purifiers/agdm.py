"""AGDM (Lin et al., "Robust Diffusion Models for Adversarial Purification"): DDPM purification
guided by a separately trained robust classifier φ."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, NonNegativeFloat, model_validator
from torch import nn

from .._checks import check_images
from ..diffusion import (
    DiscreteSchedule,
    EpsModel,
    NoiseSource,
    VPSchedule,
    add_noise,
    as_noise_source,
    ddpm,
    reverse_sde,
)
from ..diffusion.ddpm import DDPM_VARIANCES, check_variance
from ..diffusion.samplers import Callback
from ..guidance import GUIDANCE_GRADS, FromCentered, GuidedEps
from ..guidance.robust import DISTANCES, LABEL_SOURCES, RobustGuidance
from .base import (Models, PurifierSettings, check_models, from_centered, module_settings,
                   to_centered)
from .diffpure import schedule_for

AGDM_FORMS = ("discrete", "continuous")


class AGDMSettings(PurifierSettings):
    """AGDM's options (Algorithm 1 and Eq. 18; the paper's t* = 70 of 1000 levels, s = 1)."""

    name: Literal["agdm"] = "agdm"
    t_star: float = Field(0.07, gt=0.0, le=1.0, description="diffusion time t* (level "
                          "1000·t* in the discrete form)")
    form: Literal[AGDM_FORMS] = Field("discrete", description="discrete (Algorithm 1, DDPM) | "
                                      "continuous (Eq. 18, VP-SDE)")
    guidance_scale: NonNegativeFloat = Field(1.0, description="s of the robust guidance (0: "
                                             "unguided)")
    guidance_classifier: str | None = Field(None, description="spec of the robust classifier "
                                            "φ (default: the dataset's, builtin:digits-guidance "
                                            "or builtin:cifar10-guidance; train one with "
                                            "`advpure train guidance`)")
    guidance_distance: Literal[DISTANCES] = Field("kl", description="D between softmax "
                                                  "outputs: " + " | ".join(DISTANCES))
    guidance_label: Literal[LABEL_SOURCES] = Field("input", description="ŷ from φ on the "
                                                   "input | on the state x_t")
    guidance_grad: Literal[GUIDANCE_GRADS] = Field("second_order", description="what attacks "
                                                   "differentiate through the guidance: "
                                                   "second_order | first_order (a constant)")
    ddpm_variance: Literal[DDPM_VARIANCES] = Field("posterior", description="discrete form: "
                                                   "the step's variance, posterior β̃ | beta β "
                                                   "| learned (the model's)")
    clip_denoised: bool = Field(False, description="discrete form: clip x̂0 to [−1, 1] in the "
                                "posterior mean (guided-diffusion's clip_denoised)")

    def unused_options(self) -> set[str]:
        return {"ddpm_variance", "clip_denoised"} if self.form == "continuous" else set()

    @model_validator(mode="after")
    def _discrete_options(self):
        given = sorted(self.model_fields_set & self.unused_options())
        if given:
            raise ValueError(f"{', '.join(given)}: options of AGDM's discrete form (DDPM "
                             "steps), found form='continuous'")
        return self

    def runs_continuous_time(self) -> bool:
        return self.form == "continuous"

    def describe_options(self) -> list[str]:
        parts = [f"t*={self.t_star:g}", f"s={self.guidance_scale:g}", f"dt={self.dt:g}"]
        shown = {"form": "form", "guidance_distance": "D", "guidance_label": "ŷ from",
                 "ddpm_variance": "variance", "clip_denoised": "clip x̂0"}
        parts += [f"{shown[k]}={v}" for k, v in self.changed().items() if k in shown]
        if self.guidance_grad == "first_order":
            parts.append("first-order guidance gradient")
        return parts + [f"φ={self.guidance_classifier}"]

    def build(self, models: Models) -> AGDM:
        return AGDM(models.eps, models.load_classifier(self.guidance_classifier), self)


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

    Options: ``settings`` (an ``AGDMSettings``) or its fields as keywords; φ is ``classifier``.
    """

    def __init__(self, model: EpsModel, classifier: nn.Module,
                 settings: AGDMSettings | None = None, *,
                 schedule: VPSchedule | DiscreteSchedule | None = None, **options):
        super().__init__()
        s = self.settings = module_settings(AGDMSettings, settings, options)
        self.form = s.form                                        # discrete | continuous
        self.t_star = s.t_star                                    # 0.07 = level 70
        self.dt = s.dt                                            # 1e-3: every level
        self.schedule = schedule_for(s.form, schedule, f"AGDM: the {s.form} form")  # time = form
        self.guidance_scale = s.guidance_scale                    # s (paper: 1)
        self.ddpm_variance = check_variance(model, s.ddpm_variance) if s.form == "discrete" \
            else s.ddpm_variance
        self.clip_denoised = s.clip_denoised
        check_models(type(self).__name__, model, classifier)
        self.model = model                                        # eps(x_t, t), x_t in [−1, 1]
        self.classifier = classifier                              # φ: [0, 1] images -> logits
        self.guidance = RobustGuidance(FromCentered(classifier), s.guidance_distance,
                                       s.guidance_label,
                                       second_order=s.guidance_grad == "second_order")

    def forward(self, x: torch.Tensor, noise: NoiseSource | torch.Generator,
                gradient: str = "exact", callback: Callback | None = None) -> torch.Tensor:
        """Purify ``x`` (N×C×H×W in [0, 1]); ``gradient``: exact | checkpoint (| adjoint for
        the continuous form)."""
        check_images(x)
        noise = as_noise_source(noise, x)
        t_star = self.schedule.snap(torch.tensor(self.t_star)) if self.form == "discrete" \
            else torch.tensor(self.t_star, dtype=torch.float64)
        x_centered = to_centered(x)
        x_t = add_noise(x_centered, t_star, noise.randn_like(x_centered), self.schedule)  # Eq. 7
        run = dict(t_start=float(t_star), dt=self.dt, noise=noise, gradient=gradient,
                   callback=callback, context=self._reference(x))
        guided = self.guidance_scale > 0
        if self.form == "discrete":                                   # Algorithm 1
            x_0 = ddpm(self.model, x_t, self.schedule, variance=self.ddpm_variance,
                       clip_denoised=self.clip_denoised,
                       guidance=self.guidance if guided else None,
                       guidance_scale=self.guidance_scale, **run)
        else:                                                         # Eq. 18
            model = GuidedEps(self.model, self.guidance, self.schedule, self.guidance_scale) \
                if guided else self.model
            x_0 = reverse_sde(model, x_t, self.schedule, **run)
        return from_centered(x_0)

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

