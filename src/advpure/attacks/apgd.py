"""APGD with batched EOT (Croce & Hein 2020, Algorithm 1): advpure's own, for speed.

The official code (``autoattack.apgd``) loops over EOT draws one forward–backward at a time; this
version runs the K draws as one batch like ``pgd`` (``eot.py``). The algorithm is the paper's:
step size η = 2ε, momentum α = 0.75, checkpoints w_j = ⌈p_j N⌉ with p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06); at a checkpoint η halves (and the iterate
restarts from the best point) when fewer than ρ = 0.75 of the steps since the last checkpoint
increased the loss, or when neither η nor the best loss changed since it. Losses: cross-entropy,
the CW margin or DLR (Eq. 5), targeted or not (``losses.py``). Returns the point of highest
loss.
"""
from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, PositiveInt

from .base import check_attack_inputs, steps_bar
from .drawlog import AttackOutput, DrawLog
from .eot import Model, eot_loss_and_grad
from .losses import labels_for, objective
from .pgd import LossOptions, _flat_norm, project, random_start, restarts_label
from .restarts import with_restarts

MOMENTUM, RHO = 0.75, 0.75


def checkpoints(steps: int) -> list[int]:
    """The iterations w_j = ⌈p_j · steps⌉ at which the step size may halve."""
    p, marks = [0.0, 0.22], []
    while p[-1] < 1.0:
        marks.append(math.ceil(p[-1] * steps))
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted(set(marks))


def _step(x: torch.Tensor, grad: torch.Tensor, eta: torch.Tensor, norm: str) -> torch.Tensor:
    direction = grad.sign() if norm == "linf" else grad / _flat_norm(grad)
    return x + eta.view(-1, *([1] * (x.dim() - 1))) * direction


def apgd_eot(model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
             steps: int = 100, loss: str = "ce", eot: int = 1,
             generator: torch.Generator | None = None, progress: bool = False,
             targets: torch.Tensor | None = None, restarts: int = 1,
             log: DrawLog | None = None) -> torch.Tensor:
    """APGD-CE / -CW / -DLR with batched EOT, targeted toward ``targets`` when given; the start
    is uniform in the ball (``generator``); ``restarts`` as in ``restarts.py``; ``progress``
    shows a bar over the iterations."""
    y, eps = check_attack_inputs(x, y, model=model, norm=norm, eps=eps)
    loss_fn = objective(loss, targets is not None)
    if not (isinstance(steps, int) and steps >= 1 and isinstance(eot, int) and eot >= 1):
        raise ValueError(f"apgd_eot: expected integer steps >= 1 and eot >= 1, found {steps!r}, "
                         f"{eot!r}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def once(x: torch.Tensor, labels: torch.Tensor, log: DrawLog | None) -> torch.Tensor:
        return _apgd_run(model, x.detach(), labels, eps, norm, steps, loss_fn, eot, generator,
                         progress, log)
    return with_restarts(once, model, x, labels_for(y, targets), restarts, eot, log)


def _apgd_run(model: Model, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str,
              steps: int, loss_fn, eot: int, generator: torch.Generator, progress: bool,
              log: DrawLog | None = None) -> torch.Tensor:
    """One APGD run (Algorithm 1) from a uniform start; ``y``: the objective's labels."""
    marks = set(checkpoints(steps))
    n = x.shape[0]
    eta = torch.full((n,), 2.0 * eps, device=x.device, dtype=x.dtype)
    x_k = random_start(x, eps, norm, generator)
    f_k, g_k = eot_loss_and_grad(model, x_k, y, eot, loss_fn, log)
    x_best, f_best, g_best = x_k.clone(), f_k.clone(), g_k.clone()
    x_prev = x_k
    x_next = project(_step(x_k, g_k, eta, norm), x, eps, norm)          # first step: no momentum
    successes = torch.zeros(n, device=x.device)
    last_mark, eta_at_mark, best_at_mark = 0, eta.clone(), f_best.clone()
    for k in steps_bar(range(1, steps + 1), progress, f"APGD-{steps} EOT-{eot}"):
        f_next, g_next = eot_loss_and_grad(model, x_next, y, eot, loss_fn, log)
        successes += (f_next > f_k).float()
        improved = f_next > f_best
        x_best[improved], f_best[improved] = x_next[improved], f_next[improved]
        g_best[improved] = g_next[improved]
        x_prev, x_k, f_k, g_k = x_k, x_next, f_next, g_next
        if k in marks:
            few = successes < RHO * (k - last_mark)
            stuck = (eta == eta_at_mark) & (f_best == best_at_mark)
            halve = few | stuck
            eta_at_mark, best_at_mark = eta.clone(), f_best.clone()
            eta = torch.where(halve, eta / 2.0, eta)
            restart = halve.view(-1, *([1] * (x.dim() - 1)))
            x_k, g_k = torch.where(restart, x_best, x_k), torch.where(restart, g_best, g_k)
            successes.zero_()
            last_mark = k
        if k == steps:
            break
        z = project(_step(x_k, g_k, eta, norm), x, eps, norm)
        x_next = project(x_k + MOMENTUM * (z - x_k) + (1 - MOMENTUM) * (x_k - x_prev), x, eps, norm)
    return x_best.detach()


class APGDSettings(LossOptions):
    """advpure's batched-EOT APGD (``apgd_eot``; the official one is ``apgd_official``)."""

    name: Literal["apgd"] = "apgd"
    auditable: ClassVar[bool] = True
    steps: PositiveInt = Field(20, description="attack iterations")
    eot: PositiveInt = Field(1, description="EOT copies per gradient")

    def run(self, model, x, y, generator):
        log = DrawLog.for_target(model, len(x), x.device)
        x_adv = apgd_eot(model, x, y, eps=self.eps, norm=self.norm, steps=self.steps,
                         loss=self.loss, eot=self.eot, generator=generator,
                         targets=self.targets(model, x, y), restarts=self.restarts, log=log)
        return AttackOutput.logged(x_adv, log)

    def label_parts(self) -> list[str]:
        extra = (["targeted"] if self.targeted else []) + (
            [restarts_label(self.restarts)] if self.restarts > 1 else [])
        parts = [self.loss, *extra, self.eps_label(), f"{self.steps} steps"]
        return parts + ([f"EOT {self.eot}"] if self.eot > 1 else [])
