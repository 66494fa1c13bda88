"""The diffusion-only attack (DiffPure Table 15): PGD on the purifier's reconstruction error."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, PositiveInt

from .eot import Model
from .pgd import IterativeAttack, pgd


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖outputs − targets‖² (the diffusion-only attack's objective)."""
    return (outputs - targets).flatten(1).pow(2).sum(dim=1)


def diffusion_only(purify: Model, x: torch.Tensor, *, eps: float, norm: str = "linf",
                   steps: int = 20, step_size: float | None = None, eot: int = 1,
                   random_init: bool = True,
                   generator: torch.Generator | None = None, progress: bool = False
                   ) -> torch.Tensor:
    """Attack the purifier alone (DiffPure Table 15): PGD maximising ‖purify(x') − x‖² over the
    ε-ball, with EOT; the classifier is never consulted."""
    return pgd(purify, x, x.detach(), eps=eps, norm=norm, steps=steps, step_size=step_size,
               eot=eot, random_init=random_init, generator=generator, loss=squared_error,
               progress=progress)


class DiffusionOnlySettings(IterativeAttack):
    """PGD maximising ‖purify(x') − x‖²: the purifier attacked without its classifier."""

    name: Literal["diffusion"] = "diffusion"
    eot: PositiveInt = Field(1, description="EOT copies per gradient")

    needs_purifier: ClassVar[bool] = True

    def run(self, model, x, y, generator):
        return diffusion_only(model.purify, x, eps=self.eps, norm=self.norm, steps=self.steps,
                              step_size=self.step_size, eot=self.eot,
                              random_init=self.random_init, generator=generator)
