"""The defended model that attacks see: [0, 1] images in, logits out."""
from __future__ import annotations

import torch
from torch import nn

from ._checks import check_images
from .diffusion import PerSampleNoise


class PurifiedClassifier(nn.Module):
    """classifier(purifier(x)) with fresh purification noise on every call.

    The noise comes from ``generator``: every call draws one seed per image from it, so a
    repeated call (an EOT loop, AutoAttack) sees new noise, the whole run is reproducible from
    the generator's seed, and each image's purification depends only on its own seed.
    """

    def __init__(self, purifier: nn.Module, classifier: nn.Module,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.purifier = purifier        # x in [0, 1] -> purified x in [0, 1]
        self.classifier = classifier    # [0, 1] images -> logits
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """Purify a batch with fresh per-sample noise from this defense's generator."""
        check_images(x)
        return self.purifier(x, PerSampleNoise.spawn(self.generator, x.shape[0], x.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.purify(x))
