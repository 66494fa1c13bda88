"""Multi-round purification: a purifier applied r times in a row (the ``rounds`` option)."""
from __future__ import annotations

import torch
from torch import nn

from .._checks import check_images
from ..diffusion import NoiseSource, as_noise_source


class Repeated(nn.Module):
    """``purifier`` applied ``rounds`` times, each round purifying the previous round's output
    with fresh noise from the same per-image noise source (so an image still depends only on
    its own seed), as GDMP purifies in rounds. Gradients flow through every round under the
    gradient mode given; ``model``, ``schedule`` and ``settings`` are the wrapped purifier's."""

    def __init__(self, purifier: nn.Module, rounds: int):
        super().__init__()
        if not (isinstance(rounds, int) and rounds >= 1):
            raise ValueError(f"Repeated: expected rounds a whole number >= 1, found {rounds!r}")
        self.purifier, self.rounds = purifier, rounds

    def forward(self, x: torch.Tensor, noise: NoiseSource | torch.Generator, *args, **kwargs
                ) -> torch.Tensor:
        check_images(x)
        noise = as_noise_source(noise, x)
        for _ in range(self.rounds):
            x = self.purifier(x, noise, *args, **kwargs)
        return x

    @property
    def model(self) -> nn.Module:
        return self.purifier.model

    @property
    def schedule(self):
        return self.purifier.schedule

    @property
    def settings(self):
        return self.purifier.settings

    def extra_repr(self) -> str:
        return f"rounds={self.rounds}"
