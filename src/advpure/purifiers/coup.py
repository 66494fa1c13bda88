"""COUP (Classifier-cOnfidence gUided Purification): the guided reverse VP-SDE from the input."""
from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_images, check_positive
from ..diffusion import EpsModel, NoiseSource, VPSchedule, add_noise, as_noise_source, reverse_sde
from ..diffusion.samplers import Callback
from ..guidance import GUIDANCE_GRADS, ConfidenceGuidance, FromCentered, GuidedEps

COUP_PRESETS: dict[str, dict[str, float]] = {   # the paper's settings (COUP §5.1)
    "linf": {"t_star": 0.1, "guidance_scale": 1.0},
    "l2": {"t_star": 0.075, "guidance_scale": 1.0},
}


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
    ``preset`` ("linf": t* = 0.1, λ = 1; "l2": t* = 0.075, λ = 1) fills the values not given.
    """

    def __init__(self, model: EpsModel, classifier: nn.Module, t_star: float | None = None,
                 guidance_scale: float | None = None, dt: float = 1e-3,
                 schedule: VPSchedule | None = None, *, forward_noise: bool = False,
                 guidance_grad: str = "second_order", preset: str = "linf"):
        super().__init__()
        self.preset = preset                                 # fills t_star, guidance_scale
        self.t_star, self.guidance_scale = coup_settings(t_star, guidance_scale, preset)
        self.dt = check_positive(dt, "COUP dt")              # Euler–Maruyama step (paper: 1e-3)
        self.schedule = VPSchedule() if schedule is None else schedule
        self.forward_noise = bool(forward_noise)             # DiffPure's forward noising first
        self.guidance_grad = check_choice(guidance_grad, GUIDANCE_GRADS, "guidance_grad")
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
        x_t = 2.0 * x - 1.0
        if self.forward_noise:
            x_t = add_noise(x_t, self.t_star, noise.randn_like(x_t), self.schedule)
        x_0 = reverse_sde(self.guided, x_t, self.schedule, t_start=self.t_star, dt=self.dt,
                          noise=noise, gradient=gradient, callback=callback)
        return ((x_0 + 1.0) / 2.0).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return (f"t_star={self.t_star}, guidance_scale={self.guidance_scale}, dt={self.dt}, "
                f"forward_noise={self.forward_noise}, guidance_grad={self.guidance_grad}")


def coup_settings(t_star: float | None, guidance_scale: float | None,
                  preset: str | None = "linf") -> tuple[float, float]:
    """(t*, λ): the values given, the preset's where None; checked."""
    defaults = COUP_PRESETS[check_choice(preset or "linf", tuple(COUP_PRESETS), "COUP preset")]
    t_star = float(defaults["t_star"] if t_star is None else t_star)
    scale = float(defaults["guidance_scale"] if guidance_scale is None else guidance_scale)
    if not 0.0 < t_star <= 1.0:
        raise ValueError(f"COUP: expected 0 < t_star <= 1, found {t_star}")
    if not scale >= 0.0:
        raise ValueError(f"COUP: expected guidance_scale (λ) >= 0, found {scale}")
    return t_star, scale
