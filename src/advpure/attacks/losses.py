"""The per-sample objectives that the gradient attacks climb: cross-entropy, the CW margin and
DLR, untargeted or targeted.

An objective is ``loss(logits, labels) -> per-sample values`` that the attack *maximises*.
Untargeted, ``labels`` are the true labels y. Targeted, they are N×2 pairs (y, t): the attack
pushes the prediction toward the target t (``runner_up`` picks it, as APGD-T's first target).

- ``ce``: CE(z, y); targeted −CE(z, t).
- ``cw``: the margin max_{i≠y} z_i − z_y (Carlini & Wagner 2017, unclamped); targeted
  z_t − max_{i≠t} z_i.
- ``dlr``: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3) (Croce & Hein 2020, Eq. 5); targeted
  −(z_y − z_t) / (z_π1 − ½(z_π3 + z_π4)) (Eq. 6), π the logits sorted in decreasing order.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (outputs, targets) -> per sample
LOSS_NAMES = ("ce", "cw", "dlr")
DLR_FLOOR = 1e-12          # the denominator's floor (AutoAttack's; DiffHammer's code uses 1e-3)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def others(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The logits with z_y set to −∞ (so that max and argmax run over i ≠ y)."""
    return logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))


def cw_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """max_{i≠y} z_i − z_y per sample (Carlini & Wagner's loss, unclamped)."""
    return others(logits, labels).max(dim=1).values - logits.gather(1, labels[:, None])[:, 0]


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor, floor: float = DLR_FLOOR
             ) -> torch.Tensor:
    """The difference-of-logits-ratio loss per sample (Croce & Hein 2020, Eq. 5)."""
    ranked = logits.sort(dim=1, descending=True).values
    return cw_margin(logits, labels) / (ranked[:, 0] - ranked[:, 2] + floor)


def targeted_dlr(logits: torch.Tensor, pairs: torch.Tensor, floor: float = DLR_FLOOR
                 ) -> torch.Tensor:
    """−(z_y − z_t) / (z_π1 − ½(z_π3 + z_π4)) (Croce & Hein 2020, Eq. 6); ``pairs`` N×2 (y, t)."""
    ranked = logits.sort(dim=1, descending=True).values
    z_y, z_t = logits.gather(1, pairs[:, :1])[:, 0], logits.gather(1, pairs[:, 1:])[:, 0]
    return -(z_y - z_t) / (ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + floor)


UNTARGETED: dict[str, Loss] = {"ce": cross_entropy, "cw": cw_margin, "dlr": dlr_loss}
TARGETED: dict[str, Loss] = {
    "ce": lambda logits, pairs: -cross_entropy(logits, pairs[:, 1]),
    "cw": lambda logits, pairs: -cw_margin(logits, pairs[:, 1]),
    "dlr": targeted_dlr,
}


def objective(name: str, targeted: bool = False) -> Loss:
    """The loss called ``name`` (ce | cw | dlr), in its untargeted or targeted form."""
    table = TARGETED if targeted else UNTARGETED
    if name not in table:
        raise ValueError(f"loss: expected one of {' | '.join(LOSS_NAMES)}, found {name!r}")
    return table[name]


def runner_up(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The target class of a targeted attack: the most likely class other than y in one
    prediction of ``model`` on x (no gradient; a stochastic defense uses one draw)."""
    with torch.no_grad():
        logits = model(x)
    return others(logits, y).argmax(dim=1)


def labels_for(y: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """What an objective receives as labels: y, or the N×2 pairs (y, t) when targeted."""
    if targets is None:
        return y
    if targets.shape != y.shape or bool((targets == y).any()):
        raise ValueError("targets: expected one target label per image, different from its "
                         "true label")
    return torch.stack([y, targets.to(y.device)], dim=1)


def failed(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per sample: the attack succeeded (misclassified; targeted: predicted as the target)."""
    prediction = logits.argmax(dim=1)
    return prediction != labels if labels.dim() == 1 else prediction == labels[:, 1]
