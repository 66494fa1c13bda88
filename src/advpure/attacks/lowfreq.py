"""DiffBreak's low-frequency (LF) attack (Kassis, Hengartner & Yu, "DiffBreak: Is Diffusion-Based
Purification Robust?"), in an ℓ∞ or ℓ2 ball.

DiffBreak adapts an attack on image watermarking: instead of a pixel-wise perturbation, which
the purifier's noise washes out draw by draw, it optimises a *systemic* change that survives
every purification, so that even a majority vote over many draws fails. Here it is

    x' = Π_ε( F_w(x) + U(δ) )

- F_w: a learned joint-bilateral filter of the clean image, k×k per pixel, with weights
  softmax(w_p) (initialised to a Gaussian) times the range kernel exp(−‖x_p − x_q‖²/2σ_r²) of
  the clean image (edges kept, texture smoothed);
- U(δ): a perturbation on a coarse grid (the image size / ``coarse``), upsampled bilinearly,
  so it has only low frequencies;
- Π_ε: the projection onto the ε-ball around x ∩ [0, 1], which keeps advpure's threat model.

w and δ climb the EOT cross-entropy by signed gradient steps (DiffBreak's optimiser), and the
iterate with the most misclassified draws is kept (N-evaluation, as DiffBreak's attack stops
when the majority vote fails). DiffBreak bounds its own distance (LPIPS by default) rather than
an ℓp norm, and reports LPIPS: that needs pretrained AlexNet/VGG weights, which cannot be had
offline, so advpure reports SSIM (``advpure.metrics.ssim``) for every attack's saved images.
"""
from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch.nn import functional as F

from .._checks import check_positive
from .base import check_attack_inputs, steps_bar
from .diffhammer import _per_draw
from .drawlog import AttackOutput, DrawLog, record
from .losses import labels_for, objective
from .pgd import LossOptions, _flat_norm, project
from .restarts import with_restarts


def bilateral_filter(x: torch.Tensor, logits: torch.Tensor, range_sigma: float) -> torch.Tensor:
    """Each pixel p → Σ_q a_pq x_q / Σ_q a_pq over its k×k window, a_pq = softmax(logits_p)_q ·
    exp(−‖x_p − x_q‖² / 2σ_r²) (the clean image's range kernel; reflect padding).
    ``logits``: N×k²×H×W."""
    n, c, h, w = x.shape
    k = math.isqrt(logits.shape[1])
    patches = F.unfold(F.pad(x, [k // 2] * 4, mode="reflect"), k).view(n, c, k * k, h, w)
    centre = x.unsqueeze(2)
    range_kernel = torch.exp(-(patches - centre).pow(2).sum(dim=1) / (2 * range_sigma ** 2))
    weights = torch.softmax(logits, dim=1) * range_kernel.detach()
    weights = weights / weights.sum(dim=1, keepdim=True)
    return (patches * weights.unsqueeze(1)).sum(dim=2)


def gaussian_logits(x: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Filter logits whose softmax is a k×k Gaussian of width σ at every pixel."""
    coords = torch.arange(kernel, dtype=x.dtype, device=x.device) - kernel // 2
    log_g = -(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * sigma ** 2)
    return log_g.flatten()[None, :, None, None].expand(x.shape[0], -1, *x.shape[2:]).clone()


def low_frequency(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                  steps: int = 20, eot: int = 4, kernel: int = 3, coarse: int = 2,
                  range_sigma: float = 0.1, step_size: float | None = None,
                  filter_step: float = 0.5, generator: torch.Generator | None = None,
                  progress: bool = False, loss: str = "ce",
                  targets: torch.Tensor | None = None, restarts: int = 1,
                  log: DrawLog | None = None) -> torch.Tensor:
    """The LF attack (see the module doc) on ``loss`` (ce | cw | dlr, targeted toward
    ``targets`` when given); ``generator`` is unused (the start is the filtered clean image:
    the filter starts as a small Gaussian blur, δ at 0), so ``restarts`` repeat the same
    start with the defense's fresh draws."""
    y, eps = check_attack_inputs(x, y, model=model, norm=norm, eps=eps)
    if kernel % 2 == 0 or coarse < 1:
        raise ValueError(f"lf: expected an odd kernel and coarse >= 1, found kernel={kernel}, "
                         f"coarse={coarse}")
    alpha = check_positive(step_size if step_size is not None else 2.5 * eps / steps,
                           "step_size")
    loss_fn = objective(loss, targets is not None)

    def once(x: torch.Tensor, labels: torch.Tensor, log: DrawLog | None) -> torch.Tensor:
        return _lf_run(model, x.detach(), labels, loss_fn, eps, norm, steps, eot, kernel,
                       coarse, range_sigma, alpha, filter_step, progress, log)
    return with_restarts(once, model, x, labels_for(y, targets), restarts, eot, log)


def _lf_run(model, x, y, loss_fn, eps, norm, steps, eot, kernel, coarse, range_sigma, alpha,
            filter_step, progress, log) -> torch.Tensor:
    """One LF run from the filtered clean image; ``y``: the objective's labels."""
    logits = gaussian_logits(x, kernel, sigma=0.5).requires_grad_(True)
    size = (math.ceil(x.shape[2] / coarse), math.ceil(x.shape[3] / coarse))
    delta = torch.zeros(x.shape[0], x.shape[1], *size, dtype=x.dtype,
                        device=x.device).requires_grad_(True)

    def candidate() -> torch.Tensor:
        smooth = F.interpolate(delta, size=x.shape[2:], mode="bilinear", align_corners=False)
        return project(bilateral_filter(x, logits, range_sigma) + smooth, x, eps, norm)

    best = x.clone()
    best_failures = torch.full((x.shape[0],), -1, device=x.device)
    for step in steps_bar(range(steps + 1), progress, f"LF-{steps} EOT-{eot}"):
        x_adv = candidate()
        _, failed, grads = _per_draw(model, x_adv, y, eot, loss_fn)
        record(log, failed)
        failures = failed.sum(dim=0)
        better = failures >= best_failures
        best[better], best_failures[better] = x_adv.detach()[better], failures[better]
        if step == steps:
            break
        g_logits, g_delta = torch.autograd.grad(x_adv, [logits, delta], grads.mean(dim=0))
        with torch.no_grad():
            logits += filter_step * g_logits.sign()
            delta += alpha * (g_delta.sign() if norm == "linf" else g_delta / _flat_norm(g_delta))
    return best


class LowFrequencySettings(LossOptions):
    """DiffBreak's low-frequency attack: a learned bilateral filter + a coarse perturbation."""

    name: Literal["lf"] = "lf"
    auditable: ClassVar[bool] = True
    steps: PositiveInt = Field(20, description="attack iterations")
    eot: PositiveInt = Field(4, description="EOT copies per gradient")
    kernel: PositiveInt = Field(3, description="k of the learned k×k filter (odd)")
    coarse: PositiveInt = Field(2, description="the perturbation lives on a grid this many "
                                "times coarser than the image")
    range_sigma: PositiveFloat = Field(0.1, description="σ_r of the filter's range kernel")
    step_size: PositiveFloat | None = Field(None, description="step of the perturbation (None: "
                                            "2.5·eps/steps)")
    filter_step: PositiveFloat = Field(0.5, description="signed step of the filter logits")

    def run(self, model, x, y, generator):
        log = DrawLog.for_target(model, len(x), x.device)
        x_adv = low_frequency(model, x, y, eps=self.eps, norm=self.norm, steps=self.steps,
                              eot=self.eot, kernel=self.kernel, coarse=self.coarse,
                              range_sigma=self.range_sigma, step_size=self.step_size,
                              filter_step=self.filter_step, generator=generator,
                              loss=self.loss, targets=self.targets(model, x, y),
                              restarts=self.restarts, log=log)
        return AttackOutput.logged(x_adv, log)

    def label_parts(self) -> list[str]:
        return self.objective_parts() + [self.eps_label(), f"{self.steps} steps", f"EOT {self.eot}",
                f"{self.kernel}×{self.kernel} filter", f"1/{self.coarse} grid"]
