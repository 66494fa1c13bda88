"""Run a purifier at its diffusion model's resolution (DiffPure on ImageNet: 224 → 256 → 224)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .._checks import check_images


class Resized(nn.Module):
    """``purifier`` applied at ``size``×``size``: the input is resized up (bilinear, no corner
    alignment), purified, and resized back to its own size, as DiffPure does for ImageNet with
    the 256×256 guided-diffusion model and 224×224 classifiers. Gradients flow through both
    resizes; other arguments (noise, gradient mode) are passed to the purifier unchanged."""

    def __init__(self, purifier: nn.Module, size: int):
        super().__init__()
        if not (isinstance(size, int) and size > 0):
            raise ValueError(f"Resized: expected a positive integer size, found {size!r}")
        self.purifier, self.size = purifier, size

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        check_images(x)
        own = tuple(x.shape[-2:])
        if own == (self.size, self.size):
            return self.purifier(x, *args, **kwargs)
        up = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        purified = self.purifier(up.clamp(0, 1), *args, **kwargs)
        return F.interpolate(purified, size=own, mode="bilinear", align_corners=False).clamp(0, 1)

    @property
    def model(self) -> nn.Module:
        """The wrapped purifier's eps-model."""
        return self.purifier.model

    def extra_repr(self) -> str:
        return f"size={self.size}"
