"""Adapters from public diffusion networks to the one eps-model convention (DESIGN.md §2):
``model(x_t, t) -> eps`` with x_t in [−1, 1] (plus noise) and per-sample continuous VP time t.

Each adapter's docstring states what it converts. Adapters hold the network as ``net`` and add
no parameters of their own; gradients flow through them (no ``no_grad`` anywhere).
"""
from __future__ import annotations

import torch
from torch import nn

from ..diffusion import DiscreteSchedule, VPSchedule
from ..diffusion.schedule import _per_sample

PREDICTIONS = ("epsilon", "v_prediction", "sample")


def _times(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, device=x.device)
    return t.expand(x.shape[0]) if t.dim() == 0 else t


class ScoreSDEEps(nn.Module):
    """score_sde continuous VP models (NCSN++ / DDPM++, DiffPure's CIFAR-10 model).

    Converts time: the network takes the float label t·999 (score_sde's continuous models
    use N − 1 = 999, not 1000); its output is already eps-like, so score = −out/σ(t) as in
    score_sde's ``get_score_fn(continuous=True)`` — exactly our ``score`` helper.
    """

    def __init__(self, net: nn.Module, label_scale: float = 999.0):
        super().__init__()
        self.net, self.label_scale = net, label_scale

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x_t, _times(t, x_t).to(x_t.dtype) * self.label_scale)


class DiscreteTimestepEps(nn.Module):
    """Networks trained on integer DDPM timesteps (guided-diffusion's ADM UNet, diffusers'
    ``UNet2DModel``) on the linear schedule of ``DiscreteSchedule``.

    Converts time: level n = round(N·t) is the 0-based timestep index n − 1 (index 0 is the
    first noised level; t = 0 is clamped to index 0). DiffPure's guided-diffusion wrapper uses
    ⌊1000·t⌋ instead, one index lower on the levels; the two differ by one level out of 1000.
    Converts outputs: keeps the first ``channels`` channels (guided-diffusion's 6 outputs are
    eps then the learned-variance values, discarded as DiffPure does), and turns v- or
    x0-predictions into eps with the discrete ᾱ_n: eps = √ᾱ v + σ x_t, eps = (x_t − √ᾱ x̂0)/σ.
    """

    def __init__(self, net: nn.Module, channels: int = 3, prediction: str = "epsilon",
                 levels: DiscreteSchedule | None = None):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction: expected one of {PREDICTIONS}, found {prediction!r}")
        self.net, self.channels, self.prediction = net, channels, prediction
        self.levels = levels or DiscreteSchedule()

    def timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The 0-based integer timestep of continuous time t: round(N·t) − 1, at least 0."""
        return (self.levels.level(t) - 1).clamp(0, self.levels.levels - 1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = _times(t, x_t)
        out = self.net(x_t, self.timesteps(t).to(x_t.device))
        out = getattr(out, "sample", out)[:, :self.channels]
        if self.prediction == "epsilon":
            return out
        alpha_bar = _per_sample(self.levels.alpha_bar(t), x_t)
        sigma = (1 - alpha_bar).sqrt()
        if self.prediction == "v_prediction":
            return alpha_bar.sqrt() * out + sigma * x_t
        return (x_t - alpha_bar.sqrt() * out) / sigma


class EDMDenoiserEps(nn.Module):
    """EDM's preconditioned denoiser D(x; σ) (Karras et al. 2022) as a VP eps-model.

    Converts scaling and time: x_t = √ᾱ(t) x_0 + σ(t) ε is x_t/√ᾱ = x_0 + σ_edm ε with
    σ_edm = σ(t)/√ᾱ(t), so eps = (x_t/√ᾱ − D(x_t/√ᾱ; σ_edm)) / σ_edm. σ_edm is kept at least
    ``sigma_min`` (EDM's 0.002), below which the network was never trained.
    """

    def __init__(self, net: nn.Module, vp: VPSchedule | None = None, sigma_min: float = 0.002):
        super().__init__()
        self.net, self.vp, self.sigma_min = net, vp or VPSchedule(), sigma_min

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = _times(t, x_t)
        root_alpha = torch.sqrt(self.vp.alpha_bar(t)).to(x_t.dtype)
        sigma_edm = (self.vp.sigma(t).to(x_t.dtype) / root_alpha).clamp_min(self.sigma_min)
        x = x_t / _per_sample(root_alpha, x_t)
        return (x - self.net(x, sigma_edm)) / _per_sample(sigma_edm, x_t)
