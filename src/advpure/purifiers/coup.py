"""COUP (Classifier-cOnfidence gUided Purification): the guided reverse VP-SDE from the input."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, NonNegativeFloat, model_validator
from torch import nn

from .._checks import check_images
from ..diffusion import (
    NOISINGS,
    EpsModel,
    NoiseSource,
    VPSchedule,
    add_noise,
    as_noise_source,
    discrete_levels,
    reverse_sde,
)
from ..diffusion.samplers import GRIDS, Callback
from ..guidance import GUIDANCE_GRADS, ConfidenceGuidance, FromCentered, GuidedEps
from .base import (Models, PurifierSettings, check_models, from_centered, module_settings,
                   to_centered)

COUP_PRESETS: dict[str, dict[str, float]] = {   # the paper's settings (COUP §5.1)
    "linf": {"t_star": 0.1, "guidance_scale": 1.0},
    "l2": {"t_star": 0.075, "guidance_scale": 1.0},
}


class COUPSettings(PurifierSettings):
    """COUP's options. ``preset`` fills t* and λ where they are not given (``linf``: the
    defaults; ``l2``: t* = 0.075)."""

    name: Literal["coup"] = "coup"
    preset: Literal[tuple(COUP_PRESETS)] = Field("linf", description="the paper's setting: "
                                                 "linf (t* 0.1, λ 1) | l2 (t* 0.075, λ 1); "
                                                 "fills t_star and guidance_scale not given")
    t_star: float = Field(COUP_PRESETS["linf"]["t_star"], gt=0.0, le=1.0,
                          description="start time t* of the guided reverse SDE")
    guidance_scale: NonNegativeFloat = Field(COUP_PRESETS["linf"]["guidance_scale"],
                                             description="λ of the confidence guidance "
                                             "(0: COUP w/o guidance)")
    guidance_grad: Literal[GUIDANCE_GRADS] = Field("second_order", description="what attacks "
                                                   "differentiate through the guidance: "
                                                   "second_order | first_order (a constant)")
    guidance_classifier: str | None = Field(None, description="classifier spec of the "
                                            "guidance (None: the defended classifier)")
    forward_noise: bool = Field(False, description="diffuse to t* first as DiffPure does (not "
                                "in the paper)")
    t_end: NonNegativeFloat = Field(0.0, description="where the reverse SDE stops (the paper: "
                                    "0; COUP's code: 1e-5)")
    noising: Literal[NOISINGS] = Field("continuous", description="with forward_noise: ᾱ(t*) | "
                                       "discrete ᾱ of level 1000·t* (DiffPure's code)")
    grid: Literal[GRIDS] = Field("uniform", description="equal steps of ≈ dt | authors-code "
                                 "(torchsde's fixed steps of dt, a shorter last one, float32 "
                                 "times)")

    @model_validator(mode="after")
    def _ends_before_it_starts(self):
        if not self.t_end < self.t_star:
            raise ValueError(f"COUP: expected t_end < t_star, found t_end={self.t_end}, "
                             f"t_star={self.t_star}")
        if self.noising == "discrete" and not self.forward_noise:
            raise ValueError("COUP: noising='discrete' is the forward noising's ᾱ; it needs "
                             "forward_noise=True (COUP itself does not noise its input)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data):
        if isinstance(data, dict) and data.get("preset") in COUP_PRESETS:
            data = COUP_PRESETS[data["preset"]] | {k: v for k, v in data.items() if v is not None}
        return data

    def describe_options(self) -> list[str]:
        parts = [f"t*={self.t_star:g}", f"λ={self.guidance_scale:g}", f"dt={self.dt:g}"]
        if self.forward_noise:
            parts.append("forward noise")
        if self.guidance_grad == "first_order":
            parts.append("first-order guidance gradient")
        if self.guidance_classifier is not None:
            parts.append(f"guided by {self.guidance_classifier}")
        parts += [f"{k}={v}" for k, v in self.changed().items() if k in ("noising", "grid")]
        return parts + ([f"t_end={self.t_end:g}"] if self.t_end else [])

    def build(self, models: Models) -> COUP:
        guide = models.classifier if self.guidance_classifier is None else \
            models.load_classifier(self.guidance_classifier)
        return COUP(models.eps, guide, self)


class COUP(nn.Module):
    """Purify [0, 1] images by the classifier-confidence guided reverse VP-SDE (COUP Algorithm 1).

    1. map x to [−1, 1] and take it as x(t*) — no forward noising (COUP §4.2, App. C.1);
    2. solve dx = [f(x, t) − g(t)²(s_θ(x, t) + λ ∇x log max_y p̂(y|x))] dt + g(t) dw̄ from t*
       to 0 by Euler–Maruyama with step dt (Eq. 5), p̂ = softmax(classifier((x + 1)/2)), the
       classifier called on the states as they are (no clamping);
    3. map back to [0, 1] and clamp.

    λ = 0 is "COUP w/o Guidance" (the plain reverse SDE from the input; the classifier is then
    never called). ``forward_noise=True`` first diffuses the input to t* as DiffPure does — for
    comparison only: the paper does not evaluate that combination. ``guidance_grad``:
    ``second_order`` differentiates the guidance gradient in backward (COUP's augmented SDE),
    ``first_order`` treats it as a constant (what the authors' code's attacks saw).

    Options: ``settings`` (a ``COUPSettings``) or its fields as keywords; the guidance
    classifier is ``classifier`` itself.
    """

    def __init__(self, model: EpsModel, classifier: nn.Module,
                 settings: COUPSettings | None = None, *, schedule: VPSchedule | None = None,
                 **options):
        super().__init__()
        s = self.settings = module_settings(COUPSettings, settings, options)
        self.preset = s.preset                               # filled t_star, guidance_scale
        self.t_star, self.guidance_scale = s.t_star, s.guidance_scale
        self.dt = s.dt                                       # Euler–Maruyama step (paper: 1e-3)
        self.schedule = VPSchedule() if schedule is None else schedule
        self.forward_noise = s.forward_noise                 # DiffPure's forward noising first
        self.guidance_grad = s.guidance_grad
        check_models(type(self).__name__, model, classifier)
        self.model = model                                   # eps(x_t, t), x_t in [−1, 1]
        self.classifier = classifier                         # [0, 1] images -> logits
        self.guided = self._guided_model()                   # eps of the guided score

    def _guided_model(self) -> nn.Module | EpsModel:
        if self.guidance_scale == 0:
            return self.model
        guidance = ConfidenceGuidance(FromCentered(self.classifier),
                                      second_order=self.guidance_grad == "second_order")
        return GuidedEps(self.model, guidance, self.schedule, self.guidance_scale)

    def forward(self, x: torch.Tensor, noise: NoiseSource | torch.Generator,
                gradient: str = "exact", callback: Callback | None = None) -> torch.Tensor:
        """Purify ``x`` (N×C×H×W in [0, 1]) under the solver gradient mode (exact | checkpoint
        | adjoint); ``callback(i, t, x_t)`` sees every state, x_t in [−1, 1]."""
        check_images(x)
        noise = as_noise_source(noise, x)
        x_t = to_centered(x)
        if self.forward_noise:
            levels = discrete_levels(self.schedule) if self.settings.noising == "discrete" \
                else self.schedule
            x_t = add_noise(x_t, self.t_star, noise.randn_like(x_t), levels)
        x_0 = reverse_sde(self.guided, x_t, self.schedule, t_start=self.t_star,
                          t_end=self.settings.t_end, dt=self.dt, noise=noise,
                          gradient=gradient, callback=callback, grid=self.settings.grid)
        return from_centered(x_0)

    def extra_repr(self) -> str:
        return (f"t_star={self.t_star}, guidance_scale={self.guidance_scale}, dt={self.dt}, "
                f"forward_noise={self.forward_noise}, guidance_grad={self.guidance_grad}")

