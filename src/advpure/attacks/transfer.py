"""Transfer: PGD on the bare classifier, its adversarial examples evaluated on the defense."""
from __future__ import annotations

from typing import Literal

from .pgd import IterativeAttack, pgd


class TransferSettings(IterativeAttack):
    """PGD against the static classifier alone (no purifier, hence no EOT); the defense is
    evaluated on the result."""

    name: Literal["transfer"] = "transfer"

    def target(self, defense, classifier, generator):
        return classifier

    def run(self, model, x, y, generator):
        return pgd(model, x, y, eps=self.eps, norm=self.norm, steps=self.steps,
                   step_size=self.step_size, random_init=self.random_init, generator=generator)
