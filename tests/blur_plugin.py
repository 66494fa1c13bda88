"""A toy purifier and a toy attack, written as a plug-in would be: one module each (here one
file), then one registry line each (``register``). Used by test_registry.py."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import nn
from torch.nn import functional as F

from advpure.attacks import ATTACKS, NormBallAttack
from advpure.purifiers import PURIFIERS, PurifierSettings
from advpure.purifiers.base import module_settings


class BlurSettings(PurifierSettings):
    """Gaussian blur as a (weak, deterministic) purifier."""

    name: Literal["blur"] = "blur"
    sigma: PositiveFloat = Field(1.0, description="standard deviation of the Gaussian, pixels")

    continuous_time = False

    def describe_options(self) -> list[str]:
        return [f"σ={self.sigma:g}"]

    def build(self, models):
        return GaussianBlur(self)


class GaussianBlur(nn.Module):
    """x ↦ x * G_σ (3×3 kernel, borders replicated); ignores the noise it is given."""

    def __init__(self, settings: BlurSettings | None = None, **options):
        super().__init__()
        self.settings = module_settings(BlurSettings, settings, options)
        offsets = torch.tensor([-1.0, 0.0, 1.0])
        weights = torch.exp(-offsets**2 / (2 * self.settings.sigma**2))
        self.kernel = (weights[:, None] * weights[None, :] / weights.sum() ** 2)[None, None]

    def forward(self, x, noise=None, gradient="exact", callback=None):
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        channels = x.shape[1]
        kernel = self.kernel.to(x).expand(channels, 1, 3, 3)
        return F.conv2d(padded, kernel, groups=channels).clamp(0, 1)


class NoiseAttackSettings(NormBallAttack):
    """Random sign noise of size ε: the weakest attack there is."""

    name: Literal["noise"] = "noise"

    def run(self, model, x, y, generator):
        noise = torch.randn(x.shape, generator=generator).sign()
        return (x + self.eps * noise).clamp(0, 1)

    def label_parts(self) -> list[str]:
        return [f"eps={self.eps:.3g}"]


def register(purifiers=PURIFIERS, attacks=ATTACKS) -> None:
    purifiers["blur"] = BlurSettings          # the purifier's one registry line
    attacks["noise"] = NoiseAttackSettings    # the attack's one registry line
