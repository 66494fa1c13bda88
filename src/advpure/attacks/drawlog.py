"""N-evaluation as DiffHammer's code counts it: an image is broken if *any* draw of *any*
iterate that the attack scored misclassified it (Wang et al. 2024; attacker.py 117-141).

The evaluation's own rule (all-draws accuracy) re-classifies the one image an attack returns in
R fresh purification draws. DiffHammer's rule also counts the draws the attack saw on its way:
a resubmitting attacker wins as soon as any of them erred. Attacks that score their iterates on
the defense (PGD, APGD, BPDA, DiffAttack, DiffHammer, LF, the authors-code variants) record
those failures in a ``DrawLog``; the runner stores the flag per image (``attack_broken``) and the
reports give "any draw of any iterate" = every fresh draw right *and* never broken on the way.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class DrawLog:
    """Per image, whether some draw the attack scored was an attack success. ``subset`` gives a
    view on some of the images (a restart's), whose rows map back to them."""

    def __init__(self, n: int, device: torch.device | str = "cpu",
                 root: DrawLog | None = None, index: torch.Tensor | None = None):
        self.root = root or self
        self.index = torch.arange(n, device=device) if index is None else index
        if root is None:
            self.broken = torch.zeros(n, dtype=torch.bool, device=device)

    @classmethod
    def for_target(cls, model: nn.Module, n: int, device) -> DrawLog | None:
        """A log when the attacked ``model`` is the evaluated defense (not a PurifiedClassifier
        under gradient 'blind', whose forward with gradients is the bare classifier)."""
        if getattr(model, "gradient", None) == "blind":
            return None
        return cls(n, device)

    def subset(self, index: torch.Tensor) -> DrawLog:
        return DrawLog(len(index), root=self.root, index=self.index[index.to(self.index.device)])

    def saw(self, failed: torch.Tensor) -> None:
        """Record attack successes: ``failed`` K×n (draws × this log's images) or n."""
        hit = failed.reshape(-1, len(self.index)).any(dim=0).to(self.index.device)
        self.root.broken[self.index[hit]] = True


def record(log: DrawLog | None, failed: torch.Tensor) -> None:
    """``log.saw(failed)`` when there is a log."""
    if log is not None:
        log.saw(failed.detach())


@dataclass
class AttackOutput:
    """What an attack's ``run`` returns: the images, and per image whether a draw of an iterate
    it scored was misclassified (None: the attack keeps no such log)."""

    x_adv: torch.Tensor
    broken: torch.Tensor | None = None

    @classmethod
    def logged(cls, x_adv: torch.Tensor, log: DrawLog | None) -> AttackOutput:
        return cls(x_adv, None if log is None else log.broken)

    @classmethod
    def of(cls, result) -> AttackOutput:
        """A plain tensor (attacks without a log) or an ``AttackOutput``."""
        return result if isinstance(result, AttackOutput) else cls(result)
