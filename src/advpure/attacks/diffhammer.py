"""DiffHammer (Wang et al., NeurIPS 2024, "Rethinking the Robustness of Diffusion-Based
Adversarial Purification"): the selective attack with EM-weighted EOT, gradient grafting, and
the iterate chosen by N-evaluation.

EOT averages the gradients of K purifications; when only some of them share a vulnerability the
others cancel it out. DiffHammer weights the draws instead, by an EM loop over the per-draw
gradients g_k (our reading of the selective attack; the paper's text is not in
``../shared/papers`` and its code is not in the stored index):

    μ ← mean_k g_k;  repeat ``em_iters`` times:
        E: r_k = softmax_k(κ · cos(g_k, μ))        (the draws that share the direction μ)
        M: μ = Σ_k r_k g_k

and steps along sign(Σ_k r_k g_k) (ℓ∞) or its ℓ2 direction. With ``em_iters = 0`` (or κ = 0)
the weights are uniform and the step is PGD+EOT's. **Gradient grafting** computes g_k at the
purified images (the classifier's gradient only, no backward through the diffusion) and grafts
the weighted Σ_k r_k g_k onto the backward pass of one purification, the draw of largest
weight replayed with its noise: one backward through the purifier per step instead of K.
Each iterate is scored by N-evaluation (how many of its K draws are misclassified) and the
best-scored one is returned (``keep_best``).
"""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt, model_validator
from torch import nn

from .._checks import check_positive
from ..defense import PurifiedClassifier
from ..diffusion import SOLVER_GRADIENTS, PerSampleNoise
from .base import VARIANTS, check_attack_inputs, steps_bar
from .drawlog import AttackOutput, DrawLog, record
from .hammer_authors import AUTHORS_DEFAULTS, AUTHORS_OPTIMIZERS, diffhammer_authors
from .losses import Loss, cross_entropy, labels_for, objective
from .losses import failed as attack_success
from .pgd import (IterativeAttack, LossOptions, TransferTricks, _flat_norm, project,
                  random_start, restarts_label)
from .restarts import with_restarts

HAMMER_GRADIENTS = ("full", "grafting")


def selective_weights(grads: torch.Tensor, em_iters: int = 3,
                      concentration: float = 10.0) -> torch.Tensor:
    """EM weights of K per-draw gradients, ``grads`` K×N×…: K×N weights summing to 1 over K
    (uniform for ``em_iters`` = 0 or ``concentration`` = 0)."""
    k, n = grads.shape[:2]
    flat = grads.reshape(k, n, -1)
    weights = torch.full((k, n), 1.0 / k, dtype=flat.dtype, device=flat.device)
    unit = flat / flat.norm(dim=2, keepdim=True).clamp_min(1e-12)
    for _ in range(em_iters):
        centre = (weights[..., None] * flat).sum(dim=0)                          # M-step
        centre = centre / centre.norm(dim=1, keepdim=True).clamp_min(1e-12)
        weights = torch.softmax(concentration * (unit * centre).sum(dim=2), dim=0)   # E-step
    return weights


def _repeat(labels: torch.Tensor, draws: int) -> torch.Tensor:
    return labels.repeat(draws, *([1] * (labels.dim() - 1)))


def _per_draw(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int,
              loss: Loss = cross_entropy) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-draw losses, failures (K×N) and gradients (K×N×…) w.r.t. the input: one batched
    forward–backward, as EOT's, with the draws kept apart; ``y``: the objective's labels
    (N×2 pairs when targeted)."""
    rows = x.detach().repeat(draws, *([1] * (x.dim() - 1))).requires_grad_(True)
    logits = model(rows)
    losses = loss(logits, _repeat(y, draws))
    (grad,) = torch.autograd.grad(losses.sum(), rows)
    failed = attack_success(logits, _repeat(y, draws))
    shape = (draws, x.shape[0])
    return losses.detach().view(shape), failed.view(shape), grad.view(*shape, *x.shape[1:])


def _grafted(model: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, draws: int,
             em_iters: int, concentration: float, loss: Loss = cross_entropy
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(failures K×N, the grafted gradient like x): K purifications without a graph, the
    classifier's gradients at their outputs weighted by EM, pulled back through the purifier
    once, along the draw of largest weight (replayed with its noise seed)."""
    n = x.shape[0]
    seeds = PerSampleNoise.draw_seeds(model.generator, draws * n)
    rows = x.detach().repeat(draws, *([1] * (x.dim() - 1)))
    with torch.no_grad():
        purified = model.purifier(rows, PerSampleNoise.from_seeds(seeds, x.device))
    purified.requires_grad_(True)
    logits = model.classifier(purified)
    losses = loss(logits, _repeat(y, draws))
    (out_grad,) = torch.autograd.grad(losses.sum(), purified)
    out_grad = out_grad.view(draws, n, *x.shape[1:])
    weights = selective_weights(out_grad, em_iters, concentration)
    combined = (weights.view(draws, n, *([1] * (x.dim() - 1))) * out_grad).sum(dim=0)
    best = weights.argmax(dim=0)                                      # the representative draw
    replay = [seeds[int(k) * n + i] for i, k in enumerate(best)]
    x_in = x.detach().requires_grad_(True)
    again = model.purifier(x_in, PerSampleNoise.from_seeds(replay, x.device),
                           gradient=model.gradient)
    (grad,) = torch.autograd.grad(again, x_in, combined)
    failed = attack_success(logits, _repeat(y, draws)).view(draws, n)
    return failed, grad


def diffhammer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
               norm: str = "linf", steps: int = 20, step_size: float | None = None,
               eot: int = 8, em_iters: int = 3, concentration: float = 10.0,
               gradient: str = "full", keep_best: bool = True, random_init: bool = True,
               generator: torch.Generator | None = None, progress: bool = False,
               loss: str = "ce", targets: torch.Tensor | None = None, restarts: int = 1,
               log: DrawLog | None = None) -> torch.Tensor:
    """DiffHammer's selective attack, advpure's reading (see the module doc): ``eot`` = K draws
    per step, EM-weighted; ``gradient``: ``full`` (every draw differentiated through the
    defense's mode) or ``grafting`` (one backward through the purifier; needs a solver gradient
    mode, otherwise the full gradient is used, which then costs no more). ``loss`` ce | cw |
    dlr, targeted toward ``targets`` when given; ``restarts`` as in ``restarts.py``. Returns
    the iterate with the most misclassified draws (``keep_best``) or the last one. The
    authors' code is ``hammer_authors.diffhammer_authors``."""
    y, eps = check_attack_inputs(x, y, model=model, norm=norm, eps=eps)
    if gradient not in HAMMER_GRADIENTS:
        raise ValueError(f"diffhammer: expected gradient in {HAMMER_GRADIENTS}, found "
                         f"{gradient!r}")
    alpha = check_positive(step_size if step_size is not None else 2.5 * eps / steps,
                           "step_size")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    graft = (gradient == "grafting" and isinstance(model, PurifiedClassifier)
             and model.gradient in SOLVER_GRADIENTS and model.ensemble == 1)
    loss_fn = objective(loss, targets is not None)

    def once(x: torch.Tensor, labels: torch.Tensor, log: DrawLog | None) -> torch.Tensor:
        x = x.detach()
        x_adv = random_start(x, eps, norm, generator) if random_init else x.clone()
        best, best_failures = x_adv.clone(), torch.full((x.shape[0],), -1, device=x.device)
        for step in steps_bar(range(steps + 1), progress, f"DiffHammer-{steps} K={eot}"):
            final = step == steps
            if graft and not final:
                failed, direction = _grafted(model, x_adv, labels, eot, em_iters,
                                             concentration, loss_fn)
            else:
                _, failed, grads = _per_draw(model, x_adv, labels, eot, loss_fn)
                weights = selective_weights(grads, em_iters, concentration)
                direction = (weights.view(*weights.shape, *([1] * (x.dim() - 1)))
                             * grads).sum(0)
            record(log, failed)
            failures = failed.sum(dim=0)
            better = failures >= best_failures
            best[better], best_failures[better] = x_adv[better], failures[better]
            if final:
                break
            step_dir = direction.sign() if norm == "linf" else direction / _flat_norm(direction)
            x_adv = project(x_adv + alpha * step_dir, x, eps, norm)
        return (best if keep_best else x_adv).detach()
    return with_restarts(once, model, x, labels_for(y, targets), restarts, eot, log)


AUTHORS_OPTIONS = {"hammer_stride", "optimizer", "momentum", "input_diversity",
                   "smooth_gradient"}                   # the authors-code variant's own
ADVPURE_OPTIONS = {"em_iters", "concentration", "hammer_gradient", "keep_best", "loss",
                   "targeted", "random_init"}


class DiffHammerSettings(IterativeAttack, LossOptions, TransferTricks):
    """DiffHammer (Wang et al. 2024): EM-weighted EOT, gradient grafting, N-evaluation; advpure's
    reading or the authors' code (``variant``)."""

    name: Literal["diffhammer"] = "diffhammer"
    auditable: ClassVar[bool] = True
    variant: Literal[VARIANTS] = Field("advpure", description="advpure (EM over gradient "
                                       "cosines, exact replay) | authors-code (Ka1b0/DiffHammer "
                                       "@ 1010822: selection, sigmoid weights, APGD, CW/CE/DLR "
                                       "restarts, coarse grafted backward)")
    eot: PositiveInt = Field(8, description="K purification draws per step (EM-weighted; "
                             "authors-code: n_eval, 10 upstream)")
    em_iters: NonNegativeInt = Field(3, description="EM iterations of the draw weights (0: "
                                     "uniform, PGD+EOT)")
    concentration: NonNegativeFloat = Field(10.0, description="κ of the E-step softmax over "
                                            "the draws' gradient cosines")
    hammer_gradient: Literal[HAMMER_GRADIENTS] = Field("grafting", description="full | "
                                                       "grafting (one backward through the "
                                                       "purifier per step)")
    keep_best: bool = Field(True, description="return the iterate with the most misclassified "
                            "draws (N-evaluation); off: the last iterate")
    hammer_stride: PositiveInt = Field(2, description="authors-code: the grafted backward "
                                       "visits every k-th state of the chain (upstream: the "
                                       "attack's 20 levels per step over the defense's 10)")
    optimizer: Literal[AUTHORS_OPTIMIZERS] = Field("apgd", description="authors-code: apgd "
                                                   "(step 2ε, momentum 0.75) | pgd (step "
                                                   "--step-size, 0.007; --momentum, "
                                                   "--input-diversity, --smooth-gradient) | "
                                                   "vmi | svre")

    @model_validator(mode="before")
    @classmethod
    def _authors_defaults(cls, data):
        """The authors-code variant's budgets default to upstream's (config.py)."""
        if isinstance(data, dict) and data.get("variant") == "authors-code":
            return {**AUTHORS_DEFAULTS, **data}
        return data

    @model_validator(mode="after")
    def _variant_options(self):
        if self.step_size is not None and self.variant == "authors-code" and \
                self.optimizer != "pgd":
            raise ValueError(f"diffhammer variant 'authors-code': step_size is the pgd "
                             f"optimizer's (optimizer {self.optimizer!r} sets its own)")
        tricks = {"momentum", "input_diversity", "smooth_gradient"}
        if self.optimizer != "pgd" and any(getattr(self, f) != self.default(f) for f in tricks):
            raise ValueError("diffhammer: momentum, input_diversity and smooth_gradient are "
                             "options of the authors-code pgd optimizer (optimizer pgd)")
        foreign = ADVPURE_OPTIONS if self.variant == "authors-code" else AUTHORS_OPTIONS
        given = sorted(f for f in foreign if getattr(self, f) != self.default(f))
        if given:
            raise ValueError(f"diffhammer variant {self.variant!r} takes no option "
                             f"{', '.join(given)} (options of the other variant)")
        return self

    def run(self, model, x, y, generator):
        if self.variant == "authors-code":
            x_adv, history = diffhammer_authors(
                model, x, y, eps=self.eps, norm=self.norm, steps=self.steps,
                restarts=self.restarts, draws=self.eot, stride=self.hammer_stride,
                optimizer=self.optimizer, generator=generator, pgd_step=self.step_size,
                momentum=self.momentum, input_diversity=self.input_diversity,
                smooth_gradient=self.smooth_gradient)
            return AttackOutput(x_adv, history.any_failed)
        log = DrawLog.for_target(model, len(x), x.device)
        x_adv = diffhammer(model, x, y, eps=self.eps, norm=self.norm, steps=self.steps,
                           step_size=self.step_size, eot=self.eot, em_iters=self.em_iters,
                           concentration=self.concentration, gradient=self.hammer_gradient,
                           keep_best=self.keep_best, random_init=self.random_init,
                           generator=generator, loss=self.loss,
                           targets=self.targets(model, x, y), restarts=self.restarts, log=log)
        return AttackOutput.logged(x_adv, log)

    def label_parts(self) -> list[str]:
        if self.variant == "authors-code":
            step = [f"step {self.step_size:.3g}"] if self.step_size is not None else []
            return [self.eps_label(), f"{self.steps} steps", *step, restarts_label(self.restarts),
                    f"n_eval {self.eot}", self.optimizer, *self.trick_parts(),
                    f"stride {self.hammer_stride}", "authors' code"]
        parts = self.objective_parts() + super().label_parts() + [f"EM {self.em_iters}",
                                                                  self.hammer_gradient]
        return parts + ([] if self.keep_best else ["last iterate"])
