"""What every attack shares: its settings' base (the registry entry: ``run``, ``key``, budgets),
the ε-ball threat model, and the validation preamble of the attack functions."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, PositiveFloat
from torch import nn

from .._checks import check_choice, check_images, check_labels, check_positive
from ..settings import Named

NORMS = ("linf", "l2")
BUDGETS = {"steps": "{used} of {full} steps", "eot": "EOT {used} of {full}",
           "queries": "{used} of {full} Square queries"}     # what a protocol's caps cut


def check_attack_inputs(x: torch.Tensor, y: torch.Tensor, *, norm: str | None = None,
                        eps: float | None = None, labels: bool = True
                        ) -> tuple[torch.Tensor, float | None]:
    """The attacks' validation preamble: [0, 1] images, one int64 label per image (unless
    ``labels`` is False: ``y`` holds other targets), a known norm and a positive ε; returns
    (y, ε as float)."""
    check_images(x)
    if labels:
        y = check_labels(y, x.shape[0])
    if norm is not None:
        check_choice(norm, NORMS, "norm")
    return y, None if eps is None else check_positive(eps, "eps")


def seed_from(generator: torch.Generator) -> int:
    """A seed for code that takes an integer (pyautoattack), drawn from ``generator``."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


class AttackSettings(Named):
    """Settings of one registered attack. ``run`` makes adversarial examples against the model
    that ``target`` gives it; ``key`` labels its records (unique per setting)."""

    kind: ClassVar[str] = "attack"
    auditable: ClassVar[bool] = False    # a white-box gradient attack whose ε, steps and EOT
                                         # the gradient-masking audit may scale

    def target(self, defense, classifier: nn.Module, generator: torch.Generator) -> nn.Module:
        """What the attack queries and differentiates: the defense under its gradient mode."""
        return defense.model(classifier, generator)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            generator: torch.Generator) -> torch.Tensor:
        """Adversarial examples; ``generator`` drives the attack's own randomness."""
        raise NotImplementedError

    def label_parts(self) -> list[str]:
        raise NotImplementedError

    def key(self) -> str:
        """A short label, unique per setting: 'pgd-linf(eps=0.2, 20 steps, EOT 4)'."""
        norm = f"-{self.norm}" if "norm" in type(self).model_fields else ""
        return f"{self.name}{norm}({', '.join(self.label_parts())})"

    def eot_copies(self) -> int:
        """The EOT count in effect (1 for attacks without EOT)."""
        return self.budgets().get("eot", 1)

    def budgets(self) -> dict[str, int]:
        """The budgets a protocol's caps may cut (``BUDGETS``) that this attack uses."""
        return {f: getattr(self, f) for f in BUDGETS if f in type(self).model_fields}

    def capped(self, caps: dict[str, int | None]) -> AttackSettings:
        """This attack with its budgets cut to ``caps`` (budget name -> cap; step sizes kept)."""
        cut = {f: caps[f] for f, used in self.budgets().items()
               if caps.get(f) is not None and used > caps[f]}
        return self.replace(**cut) if cut else self


class NormBallAttack(AttackSettings):
    """An attack in the ℓp ball of radius ε around the input, intersected with [0, 1]."""

    eps: PositiveFloat = Field(8 / 255, description="perturbation budget ε")
    norm: Literal[NORMS] = Field("linf", description="threat model: linf | l2")


def reductions(full: list[AttackSettings], used: list[AttackSettings]) -> list[str]:
    """'autoattack-linf(rand, …): 20 of 100 steps, EOT 4 of 20' for every reduced attack."""
    lines = []
    for a, b in zip(full, used):
        cuts = [BUDGETS[f].format(used=b.budgets()[f], full=n) for f, n in a.budgets().items()
                if b.budgets()[f] < n]
        if cuts:
            lines.append(f"{a.key()}: {', '.join(cuts)}")
    return lines
