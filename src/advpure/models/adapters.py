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

    def __init__(self, net: nn.Module, label_scale: float = 999.0, label_offset: float = 0.0):
        super().__init__()
        self.net, self.label_scale, self.label_offset = net, label_scale, label_offset

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        labels = _times(t, x_t).to(x_t.dtype) * self.label_scale + self.label_offset
        return self.net(x_t, labels)

    def index_labelled(self) -> ScoreSDEEps:
        """The same network given the DDPM index 1000·t − 1 as its label, as Pei et al.'s
        CIFAR-10 code calls score_sde (GaozhengPei/Purification, purification.py 247: the
        integer timestep, where the continuous model was trained on 999·t)."""
        return ScoreSDEEps(self.net, label_scale=1000.0, label_offset=-1.0)


class DiscreteTimestepEps(nn.Module):
    """Networks trained on integer DDPM timesteps (guided-diffusion's ADM UNet, diffusers'
    ``UNet2DModel``) on the linear schedule of ``DiscreteSchedule``.

    Converts time: level n = round(N·t) is the 0-based timestep index n − 1 (index 0 is the
    first noised level; t = 0 is clamped to index 0). DiffPure's guided-diffusion wrapper passes
    ⌊1000·t⌋, which is one index *higher* than this one at the levels (index n for level n, the
    timestep whose ᾱ is one level noisier than the state's); the index here is the one whose
    ᾱ_{index+1} is the state's ᾱ_n.
    Converts outputs: ``forward`` keeps the first ``channels`` channels (eps), and turns v- or
    x0-predictions into eps with the discrete ᾱ_n: eps = √ᾱ v + σ x_t, eps = (x_t − √ᾱ x̂0)/σ.
    With ``learned_variance`` (guided-diffusion's ``learn_sigma``: 2·channels outputs) the next
    ``channels`` outputs are the variance values v that ``eps_and_variance`` returns beside eps
    (Nichol & Dhariwal 2021, Eq. 15; ``ddpm_variance="learned"``).
    """

    def __init__(self, net: nn.Module, channels: int = 3, prediction: str = "epsilon",
                 levels: DiscreteSchedule | None = None, learned_variance: bool = False):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction: expected one of {PREDICTIONS}, found {prediction!r}")
        self.net, self.channels, self.prediction = net, channels, prediction
        self.levels = levels or DiscreteSchedule()
        self.learned_variance = learned_variance     # outputs 2·channels: eps, then v

    def eps_and_variance(self, x_t: torch.Tensor, t: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps, v) from one network call; v ∈ [−1, 1] interpolates the log-variance."""
        if not self.learned_variance:
            raise ValueError("eps_and_variance: this model has no learned-variance outputs")
        out = self._outputs(x_t, _times(t, x_t))
        return self._to_eps(out[:, :self.channels], x_t, _times(t, x_t)), \
            out[:, self.channels:2 * self.channels]

    def _outputs(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.net(x_t, self.timesteps(t).to(x_t.device))
        return getattr(out, "sample", out)

    def timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The 0-based integer timestep of continuous time t: round(N·t) − 1, at least 0."""
        return (self.levels.level(t) - 1).clamp(0, self.levels.levels - 1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = _times(t, x_t)
        return self._to_eps(self._outputs(x_t, t)[:, :self.channels], x_t, t)

    def _to_eps(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
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
