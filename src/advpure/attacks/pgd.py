"""Projected gradient descent (Madry et al. 2018) with batched EOT, ℓ∞ and ℓ2."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt
from tqdm.auto import tqdm

from .._checks import check_positive
from .base import NormBallAttack, check_attack_inputs
from .drawlog import AttackOutput, DrawLog
from .eot import Model, eot_loss_and_grad
from .losses import LOSS_NAMES, Loss, labels_for, objective, runner_up
from .restarts import with_restarts
from .transfer_tricks import l1_momentum, rescale_randomly, smooth


def _flat_norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project onto the ε-ball around x (ℓ∞ or ℓ2) intersected with [0, 1]."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / _flat_norm(delta)).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """Uniform in the ℓ∞ ball, or uniform in the ℓ2 ball (direction × radius·U^(1/d))."""
    shape = dict(generator=generator, device=generator.device, dtype=x.dtype)
    if norm == "linf":
        delta = (2.0 * torch.rand(x.shape, **shape) - 1.0) * eps
    else:
        direction = torch.randn(x.shape, **shape)
        radius = torch.rand(x.shape[0], **shape) ** (1.0 / x[0].numel()) * eps
        delta = direction / _flat_norm(direction) * radius.view(-1, *([1] * (x.dim() - 1)))
    return project(x + delta.to(x.device), x, eps, norm)


def pgd(model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
        steps: int = 20, step_size: float | None = None, eot: int = 1,
        random_init: bool = True, generator: torch.Generator | None = None,
        progress: bool = False, loss: str | Loss = "ce", targets: torch.Tensor | None = None,
        restarts: int = 1, log: DrawLog | None = None, momentum: float = 0.0,
        input_diversity: bool = False, smooth_gradient: bool = False) -> torch.Tensor:
    """Maximize the EOT ``loss`` of ``model`` within the ε-ball; returns the last iterate.

    ``loss``: ce | cw | dlr (``losses.py``), targeted toward ``targets`` when they are given;
    or another per-sample objective ``loss(outputs, y)`` with ``y`` its targets (e.g. the
    diffusion-only attack's squared error to the clean images; labels are not checked then).
    ℓ∞ steps along sign(∇), ℓ2 along ∇/‖∇‖₂; each step is projected back onto the ball ∩ [0, 1].
    ``step_size`` defaults to 2.5·ε/steps. ``generator`` drives the random start only; a
    stochastic ``model`` (a PurifiedClassifier) draws its own noise on every call.
    ``restarts`` > 1 runs again from new random starts on the images not yet broken
    (``restarts.py``). ``log`` records the images some draw of some iterate misclassified
    (``drawlog.py``). ``momentum`` μ > 0, ``input_diversity`` and ``smooth_gradient`` are the
    M, D and T of DiffHammer's PGD (``transfer_tricks.py``): T smooths the gradient, M
    accumulates it, D rescales each copy's input at random (from ``generator``).
    """
    named = isinstance(loss, str)
    y, eps = check_attack_inputs(x, y, model=model, norm=norm, eps=eps, labels=named)
    if not isinstance(steps, int) or steps < 1 or not isinstance(eot, int) or eot < 1:
        raise ValueError(f"pgd: expected integer steps >= 1 and eot >= 1, found {steps!r}, {eot!r}")
    alpha = check_positive(step_size if step_size is not None else 2.5 * eps / steps, "step_size")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    objective_fn = objective(loss, targets is not None) if named else loss
    x = x.detach()

    attacked = (lambda rows: model(rescale_randomly(rows, generator))) if input_diversity \
        else model

    def once(x: torch.Tensor, labels: torch.Tensor, log: DrawLog | None) -> torch.Tensor:
        x_adv = random_start(x, eps, norm, generator) if random_init else x.clone()
        accumulated = torch.zeros_like(x)
        for _ in tqdm(range(steps), desc=f"PGD-{steps} EOT-{eot}", disable=not progress,
                      leave=False):
            _, grad = eot_loss_and_grad(attacked, x_adv, labels, eot, objective_fn, log)
            grad = smooth(grad) if smooth_gradient else grad
            if momentum > 0:
                grad = accumulated = l1_momentum(accumulated, grad, momentum)
            direction = grad.sign() if norm == "linf" else grad / _flat_norm(grad)
            x_adv = project(x_adv + alpha * direction, x, eps, norm)
        return x_adv.detach()
    labels = labels_for(y, targets) if named else y
    if restarts == 1:
        return once(x, labels, log)
    return with_restarts(once, model, x, labels, restarts, eot, log)


class LossOptions(NormBallAttack):
    """The objective of a gradient attack: its loss, targeted or not, and restarts."""

    loss: Literal[LOSS_NAMES] = Field("ce", description="the loss climbed: ce | cw (the "
                                      "margin) | dlr (Croce & Hein Eq. 5)")
    targeted: bool = Field(False, description="push toward the runner-up class of one "
                           "prediction on the clean image (APGD-T's first target)")
    restarts: PositiveInt = Field(1, description="runs from new random starts on the images "
                                  "not yet broken (each keeps its best run)")

    def targets(self, model, x, y) -> torch.Tensor | None:
        """The target labels of a targeted run (None: untargeted)."""
        return runner_up(model, x, y) if self.targeted else None

    def objective_parts(self) -> list[str]:
        """'cw', 'targeted', '3 restarts' where they differ from CE, untargeted, one run."""
        parts = [self.loss] if self.loss != "ce" else []
        parts += ["targeted"] if self.targeted else []
        return parts + ([restarts_label(self.restarts)] if self.restarts > 1 else [])


def restarts_label(n: int) -> str:
    """'1 restart', '3 restarts'."""
    return f"{n} restart{'s' if n != 1 else ''}"


class IterativeAttack(NormBallAttack):
    """Options of the PGD family (pgd, bpda, transfer, diffusion-only, the breakers)."""

    steps: PositiveInt = Field(20, description="attack iterations")
    step_size: PositiveFloat | None = Field(None, description="PGD step (None: 2.5·eps/steps)")
    random_init: bool = Field(True, description="start at a random point of the ball")

    def label_parts(self) -> list[str]:
        parts = [self.eps_label(), f"{self.steps} steps"]
        if self.step_size is not None:
            parts.append(f"step {self.step_size:.3g}")
        if "eot" in type(self).model_fields:
            parts.append(f"EOT {self.eot}")
        return parts + ([] if self.random_init else ["no random start"])


class TransferTricks(NormBallAttack):
    """DiffHammer's PGD options M, D, T (``transfer_tricks.py``)."""

    momentum: NonNegativeFloat = Field(0.0, description="M: μ of the momentum on the "
                                       "ℓ1-normalised gradient (DiffHammer's code: 1; 0: off)")
    input_diversity: bool = Field(False, description="D: rescale each copy's input by U[0.9, "
                                  "1.1] with probability ½")
    smooth_gradient: bool = Field(False, description="T: smooth the gradient with a 3×3 "
                                  "Gaussian (σ = 1/√3)")

    def trick_parts(self) -> list[str]:
        """'M 1', 'D', 'T' where on."""
        return ([f"M {self.momentum:g}"] if self.momentum > 0 else []) + \
            (["D"] if self.input_diversity else []) + (["T"] if self.smooth_gradient else [])


class PGDSettings(IterativeAttack, LossOptions, TransferTricks):
    """PGD+EOT through the defense's gradient mode (Madry et al. 2018; Athalye et al. 2018)."""

    name: Literal["pgd"] = "pgd"
    auditable: ClassVar[bool] = True
    eot: PositiveInt = Field(1, description="EOT copies per gradient")

    def run(self, model, x, y, generator):
        log = DrawLog.for_target(model, len(x), x.device)
        x_adv = pgd(model, x, y, eps=self.eps, norm=self.norm, steps=self.steps,
                    step_size=self.step_size, eot=self.eot, random_init=self.random_init,
                    generator=generator, loss=self.loss, targets=self.targets(model, x, y),
                    restarts=self.restarts, log=log, momentum=self.momentum,
                    input_diversity=self.input_diversity, smooth_gradient=self.smooth_gradient)
        return AttackOutput.logged(x_adv, log)

    def label_parts(self) -> list[str]:
        return self.objective_parts() + super().label_parts() + self.trick_parts()
