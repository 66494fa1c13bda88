"""DiffAttack (Kang, Song & Li, NeurIPS 2023): PGD on the classification loss plus the
deviated-reconstruction loss on the intermediate states of the reverse process."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, NonNegativeFloat, PositiveInt
from torch import nn

from ..defense import PurifiedClassifier, combine_ensemble
from ..diffusion import PerSampleNoise
from .base import check_attack_inputs
from .eot import cross_entropy
from .pgd import IterativeAttack, pgd

STATE_GRADIENTS = ("exact", "checkpoint")       # the modes that differentiate every state


class DeviationProbe(nn.Module):
    """The defense seen by DiffAttack: ``x_adv -> (logits, deviation)``.

    Each call draws one noise seed per row from the defense's generator and purifies both the
    clean images (no graph) and ``x_adv`` with the *same* noise, recording the reverse-process
    states x_t(x) and x_t(x_adv) every ``every`` steps; the deviation of a row is the mean over
    those steps of ‖x_t(x_adv) − x_t(x)‖² / d (states in [−1, 1], d pixels), the paper's
    deviated-reconstruction loss with uniform weights. Rows of ``x_adv`` are copies of the clean
    batch (EOT, copy-major), and an ensemble defense purifies every row S times.
    """

    def __init__(self, defense: PurifiedClassifier, clean: torch.Tensor, every: int = 1):
        super().__init__()
        if defense.gradient not in STATE_GRADIENTS:
            raise ValueError(f"diffattack: its deviated-reconstruction loss differentiates every "
                             f"reverse-process state, which gradient {defense.gradient!r} does "
                             f"not; use a defense gradient of {' | '.join(STATE_GRADIENTS)}")
        self.defense, self.clean, self.every = defense, clean.detach(), every

    def _trajectory(self, x: torch.Tensor, seeds: list[int]) -> tuple[torch.Tensor, list]:
        states: list[torch.Tensor] = []

        def record(i: int, t: float, x_t: torch.Tensor) -> None:
            if (i + 1) % self.every == 0:
                states.append(x_t)
        noise = PerSampleNoise.from_seeds(seeds, device=x.device)
        purified = self.defense.purifier(x, noise, gradient=self.defense.gradient,
                                         callback=record)
        return purified, states

    def forward(self, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        copies = x_adv.shape[0] // self.clean.shape[0] * self.defense.ensemble
        x_adv = x_adv.repeat(self.defense.ensemble, 1, 1, 1)
        clean = self.clean.repeat(copies, 1, 1, 1)
        seeds = PerSampleNoise.draw_seeds(self.defense.generator, x_adv.shape[0])
        with torch.no_grad():
            _, reference = self._trajectory(clean, seeds)
        purified, states = self._trajectory(x_adv, seeds)
        if not states:
            raise ValueError(f"diffattack: no reverse-process state was recorded (every = "
                             f"{self.every} is more than the purifier's steps)")
        deviation = torch.stack([(s - r).pow(2).flatten(1).mean(dim=1)
                                 for s, r in zip(states, reference)]).mean(dim=0)
        logits = self.defense.classifier(purified)
        s = self.defense.ensemble
        if s > 1:
            logits = combine_ensemble(logits.view(s, -1, logits.shape[1]),
                                      self.defense.ensemble_rule)
            deviation = deviation.view(s, -1).mean(dim=0)
        return logits, deviation


def deviated_loss(weight: float):
    """The DiffAttack objective per row: cross-entropy + λ · deviation."""
    def loss(outputs, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, tuple):
            logits, deviation = outputs
            return cross_entropy(logits, labels) + weight * deviation
        return cross_entropy(outputs, labels)      # the bare classifier has no states
    return loss


def diffattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
               norm: str = "linf", steps: int = 20, step_size: float | None = None,
               eot: int = 1, weight: float = 1.0, every: int = 1, random_init: bool = True,
               generator: torch.Generator | None = None, progress: bool = False
               ) -> torch.Tensor:
    """DiffAttack: PGD+EOT maximising CE(f(P(x'))) + λ·L_dev(x', x), L_dev the deviation of
    the reverse-process states of x' from those of the clean x under the same noise (the paper's
    Eq. for the deviated-reconstruction loss, uniform weights over the recorded steps).

    The paper's segment-wise forwarding–backwarding is the defense's ``checkpoint`` gradient
    mode (same gradient, one state per step kept). Against an undefended ``model`` (no
    purifier, no states) it is PGD on the cross-entropy.
    """
    y, eps = check_attack_inputs(x, y, model=model, norm=norm, eps=eps)
    target = DeviationProbe(model, x, every) if isinstance(model, PurifiedClassifier) else model
    return pgd(target, x, y, eps=eps, norm=norm, steps=steps, step_size=step_size, eot=eot,
               random_init=random_init, generator=generator, loss=deviated_loss(weight),
               progress=progress)


class DiffAttackSettings(IterativeAttack):
    """DiffAttack (Kang et al. 2023): PGD+EOT on CE + λ × the deviated-reconstruction loss."""

    name: Literal["diffattack"] = "diffattack"
    auditable: ClassVar[bool] = True
    eot: PositiveInt = Field(1, description="EOT copies per gradient")
    deviation_weight: NonNegativeFloat = Field(1.0, description="λ of the deviated-"
                                               "reconstruction loss (0: PGD+EOT)")
    deviation_every: PositiveInt = Field(1, description="the states of every k-th reverse "
                                         "step enter the deviation")

    def run(self, model, x, y, generator):
        return diffattack(model, x, y, eps=self.eps, norm=self.norm, steps=self.steps,
                          step_size=self.step_size, eot=self.eot, weight=self.deviation_weight,
                          every=self.deviation_every, random_init=self.random_init,
                          generator=generator)

    def label_parts(self) -> list[str]:
        return super().label_parts() + [f"λ={self.deviation_weight:g}"] + (
            [f"every {self.deviation_every}"] if self.deviation_every > 1 else [])

