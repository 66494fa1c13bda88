"""DiffAttack (Kang, Song & Li, NeurIPS 2023): PGD on the classification loss plus the
deviated-reconstruction loss on the intermediate states of the reverse process."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, NonNegativeFloat, PositiveInt, model_validator
from torch import nn

from ..defense import PurifiedClassifier, combine_ensemble
from ..diffusion import PerSampleNoise
from .base import VARIANTS, check_attack_inputs
from .drawlog import AttackOutput, DrawLog
from .hammer_authors import AUTHORS_DEFAULTS, diffhammer_authors
from .losses import LOSS_NAMES, Loss, cross_entropy, labels_for, objective
from .pgd import IterativeAttack, LossOptions, pgd, restarts_label
from .restarts import with_restarts

STATE_GRADIENTS = ("exact", "checkpoint")       # the modes that differentiate every state


class DeviationProbe(nn.Module):
    """The defense seen by DiffAttack: ``x_adv -> (logits, deviation)``.

    Each call draws one noise seed per row from the defense's generator and purifies both the
    clean images (no graph) and ``x_adv`` with the *same* noise, recording the reverse-process
    states x_t(x) and x_t(x_adv) every ``every`` steps (their image channels: LM's state also
    holds its Adam moments); the deviation of a row is the mean over
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
                states.append(x_t[:, :x.shape[1]])       # the image (LM packs Adam's m, v)
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


def deviated_loss(weight: float, base: Loss = cross_entropy):
    """The DiffAttack objective per row: the classification loss ``base`` + λ · deviation."""
    def loss(outputs, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, tuple):
            logits, deviation = outputs
            return base(logits, labels) + weight * deviation
        return base(outputs, labels)               # the bare classifier has no states
    return loss


def diffattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
               norm: str = "linf", steps: int = 20, step_size: float | None = None,
               eot: int = 1, weight: float = 1.0, every: int = 1, random_init: bool = True,
               generator: torch.Generator | None = None, progress: bool = False,
               loss: str = "cw", targets: torch.Tensor | None = None, restarts: int = 1,
               log: DrawLog | None = None) -> torch.Tensor:
    """DiffAttack: PGD+EOT maximising ℓ(f(P(x'))) + λ·L_dev(x', x), L_dev the deviation of
    the reverse-process states of x' from those of the clean x under the same noise (the paper's
    Eq. for the deviated-reconstruction loss, uniform weights over the recorded steps), ℓ the
    ``loss`` (cw by default: CE's gradient saturates on a confident defense and λ·L_dev then
    decides the sign of the step; targeted toward ``targets`` when given).

    The paper's segment-wise forwarding–backwarding is the defense's ``checkpoint`` gradient
    mode (same gradient, one state per step kept). Against an undefended ``model`` (no
    purifier, no states) it is PGD on the loss. ``restarts`` as in ``restarts.py``. The
    authors' code (DiffHammer's re-implementation) is ``variant="authors-code"`` of the
    settings (``hammer_authors``).
    """
    y, eps = check_attack_inputs(x, y, model=model, norm=norm, eps=eps)
    objective_fn = deviated_loss(weight, objective(loss, targets is not None))

    def once(x: torch.Tensor, labels: torch.Tensor, log: DrawLog | None) -> torch.Tensor:
        target = DeviationProbe(model, x, every) if isinstance(model, PurifiedClassifier) \
            else model
        return pgd(target, x, labels, eps=eps, norm=norm, steps=steps, step_size=step_size,
                   eot=eot, random_init=random_init, generator=generator, loss=objective_fn,
                   progress=progress, log=log)
    return with_restarts(once, model, x, labels_for(y, targets), restarts, eot, log)


ADVPURE_OPTIONS = {"deviation_weight", "deviation_every", "loss", "targeted", "step_size",
                   "random_init"}


class DiffAttackSettings(IterativeAttack, LossOptions):
    """DiffAttack (Kang et al. 2023): PGD+EOT on the loss + λ × the deviated-reconstruction
    loss (advpure), or DiffHammer's re-implementation of it (authors-code)."""

    name: Literal["diffattack"] = "diffattack"
    auditable: ClassVar[bool] = True
    variant: Literal[VARIANTS] = Field("advpure", description="advpure (deviation from the "
                                       "clean image's path, exact gradient) | authors-code "
                                       "(Ka1b0/DiffHammer @ 1010822: deviation from the "
                                       "adversarial image's own noised state, APGD, CW/CE/DLR "
                                       "restarts, coarse backward)")
    loss: Literal[LOSS_NAMES] = Field("cw", description="the classification loss: ce | cw "
                                      "(the margin) | dlr")
    eot: PositiveInt = Field(1, description="EOT copies per gradient (authors-code: n_eval "
                             "draws that score each iterate, 10 upstream)")
    deviation_weight: NonNegativeFloat = Field(1.0, description="λ of the deviated-"
                                               "reconstruction loss (0: PGD+EOT)")
    deviation_every: PositiveInt = Field(1, description="the states of every k-th reverse "
                                         "step enter the deviation")
    hammer_stride: PositiveInt = Field(2, description="authors-code: the backward visits "
                                       "every k-th state of the chain")

    @model_validator(mode="before")
    @classmethod
    def _authors_defaults(cls, data):
        if isinstance(data, dict) and data.get("variant") == "authors-code":
            return {**AUTHORS_DEFAULTS, **data}
        return data

    @model_validator(mode="after")
    def _variant_options(self):
        foreign = ADVPURE_OPTIONS if self.variant == "authors-code" else {"hammer_stride"}
        given = sorted(f for f in foreign if getattr(self, f) != self.default(f))
        if given:
            raise ValueError(f"diffattack variant {self.variant!r} takes no option "
                             f"{', '.join(given)} (options of the other variant)")
        return self

    def run(self, model, x, y, generator):
        if self.variant == "authors-code":
            x_adv, history = diffhammer_authors(
                model, x, y, eps=self.eps, norm=self.norm, steps=self.steps,
                restarts=self.restarts, draws=self.eot, stride=self.hammer_stride,
                generator=generator, em=False, deviation=True)
            return AttackOutput(x_adv, history.any_failed)
        log = DrawLog.for_target(model, len(x), x.device)
        x_adv = diffattack(model, x, y, eps=self.eps, norm=self.norm, steps=self.steps,
                           step_size=self.step_size, eot=self.eot,
                           weight=self.deviation_weight, every=self.deviation_every,
                           random_init=self.random_init, generator=generator, loss=self.loss,
                           targets=self.targets(model, x, y), restarts=self.restarts, log=log)
        return AttackOutput.logged(x_adv, log)

    def label_parts(self) -> list[str]:
        if self.variant == "authors-code":
            return [self.eps_label(), f"{self.steps} steps", restarts_label(self.restarts),
                    f"n_eval {self.eot}", f"stride {self.hammer_stride}", "authors' code"]
        return self.objective_parts() + super().label_parts() + \
            [f"λ={self.deviation_weight:g}"] + \
            ([f"every {self.deviation_every}"] if self.deviation_every > 1 else [])
