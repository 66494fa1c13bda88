"""BPDA+EOT (Athalye et al. 2018): PGD with the purifier's gradient replaced by the identity."""
from __future__ import annotations

from typing import Literal

from .pgd import PGDSettings


class BPDASettings(PGDSettings):
    """PGD+EOT whose backward pass treats the purifier as the identity: the classifier's
    gradient at the purified image (the forward pass is the real defense)."""

    name: Literal["bpda"] = "bpda"

    def target(self, defense, classifier, generator):
        if defense.purifier is None:
            return defense.model(classifier, generator)
        return defense.model(classifier, generator, gradient="bpda")
