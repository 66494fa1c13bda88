"""DiffPure (Nie et al., ICML 2022): diffuse to t*, then solve the reverse VP-SDE back to 0."""
from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_images, check_positive
from ..diffusion import SAMPLERS, EpsModel, NoiseSource, VPSchedule, add_noise, as_noise_source


class DiffPure(nn.Module):
    """Purify [0, 1] images with a pretrained eps-model (DiffPure Eqs. 3–5).

    1. map x to [−1, 1] and diffuse it to t*: x(t*) = √ᾱ(t*) x + σ(t*) ε      (Eq. 3)
    2. integrate the reverse VP-SDE from t* to 0 by Euler–Maruyama with step dt  (Eqs. 4–5),
       or with ``sampler="ode"`` the probability-flow VP-ODE by Euler (App. B.4, Eq. 28)
    3. map back to [0, 1]; the final clamp to [0, 1] is part of the output contract.

    Gradients flow through every step (no ``torch.no_grad`` anywhere).
    """

    def __init__(self, model: EpsModel, t_star: float = 0.1, dt: float = 1e-3,
                 schedule: VPSchedule | None = None, sampler: str = "sde"):
        super().__init__()
        if not 0.0 < t_star <= 1.0:
            raise ValueError(f"DiffPure: expected 0 < t_star <= 1, found {t_star}")
        self.model = model                              # eps(x_t, t), x_t in [−1, 1]
        self.t_star = float(t_star)                     # diffusion time t* (paper: 0.1 on CIFAR-10)
        self.dt = check_positive(dt, "DiffPure dt")     # Euler–Maruyama step (paper: 1e-3)
        self.schedule = schedule or VPSchedule()        # β_min = 0.1, β_max = 20
        self.sampler = check_choice(sampler, tuple(SAMPLERS), "sampler")   # sde | ode

    def forward(self, x: torch.Tensor, noise: NoiseSource | torch.Generator,
                gradient: str = "exact") -> torch.Tensor:
        """Purify ``x`` (N×C×H×W in [0, 1]); ``noise`` is a generator or a per-sample source.

        ``gradient`` is the solver-level gradient mode: exact | checkpoint | adjoint.
        """
        check_images(x)
        noise = as_noise_source(noise, x)
        x_centered = 2.0 * x - 1.0
        t = torch.full((x.shape[0],), self.t_star, device=x.device, dtype=x.dtype)
        x_t = add_noise(x_centered, t, noise.randn_like(x_centered), self.schedule)
        x_0 = SAMPLERS[self.sampler](self.model, x_t, self.schedule, t_start=self.t_star,
                                     dt=self.dt, noise=noise, gradient=gradient)
        return ((x_0 + 1.0) / 2.0).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"sampler={self.sampler}, t_star={self.t_star}, dt={self.dt}, schedule={self.schedule}"
