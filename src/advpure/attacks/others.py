"""The other attacks of the papers' protocols: StAdv (a flow-field threat model), Square
(black-box, official code), the diffusion-only attack and transfer from the bare classifier."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_images, check_labels, check_positive
from .autoattack import AUTOATTACK_NORMS, isolated_rng
from .eot import Model
from .pgd import NORMS, pgd

DEFAULT_FLOW_BOUND = 0.05


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Resample x at the identity grid displaced by ``flow`` (N×2×H×W, x then y, in
    ``grid_sample``'s normalised coordinates [−1, 1]); bilinear, borders replicated."""
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, dtype=x.dtype, device=x.device),
                            torch.linspace(-1, 1, w, dtype=x.dtype, device=x.device),
                            indexing="ij")
    grid = torch.stack([xs, ys], dim=-1).expand(n, h, w, 2) + flow.permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def cw_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """max_{i≠y} z_i − z_y per sample (Carlini & Wagner's loss, unclamped)."""
    true = logits.gather(1, labels[:, None])[:, 0]
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return others.max(dim=1).values - true


def stadv(model: Model, x: torch.Tensor, y: torch.Tensor, *, bound: float = DEFAULT_FLOW_BOUND,
          steps: int = 100, lr: float = 0.01, eot: int = 1) -> torch.Tensor:
    """StAdv (Xiao et al. 2018) as DiffPure evaluates it (PAT's settings): the images warped by
    ``stadv_flow``'s flow field (in [0, 1] by construction)."""
    flow = stadv_flow(model, x, y, bound=bound, steps=steps, lr=lr, eot=eot)
    with torch.no_grad():
        return flow_warp(x.detach(), flow).clamp(0.0, 1.0)


def stadv_flow(model: Model, x: torch.Tensor, y: torch.Tensor, *,
               bound: float = DEFAULT_FLOW_BOUND, steps: int = 100, lr: float = 0.01,
               eot: int = 1) -> torch.Tensor:
    """StAdv's flow field f = bound·tanh(w) (N×2×H×W, every component within ``bound`` in
    normalised coordinates), w optimised by Adam (``lr``) for ``steps`` iterations on the CW
    margin averaged over ``eot`` batched draws; the last iterate."""
    check_images(x)
    y = check_labels(y, x.shape[0])
    bound = check_positive(bound, "StAdv bound")
    if not (isinstance(steps, int) and steps >= 1 and isinstance(eot, int) and eot >= 1):
        raise ValueError(f"stadv: expected integer steps >= 1 and eot >= 1, found {steps!r}, "
                         f"{eot!r}")
    x = x.detach()
    w = torch.zeros(x.shape[0], 2, *x.shape[2:], dtype=x.dtype, device=x.device,
                    requires_grad=True)
    optimiser = torch.optim.Adam([w], lr=check_positive(lr, "StAdv lr"))
    for _ in range(steps):
        warped = flow_warp(x, bound * torch.tanh(w))
        logits = model(warped.repeat(eot, 1, 1, 1))
        loss = -cw_margin(logits, y.repeat(eot)).sum() / eot
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return (bound * torch.tanh(w)).detach()


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
           norm: str = "linf", queries: int = 5000, seed: int = 0) -> torch.Tensor:
    """Square Attack (Andriushchenko et al. 2020), black-box, from pyautoattack (p_init 0.8, one
    restart, as in AutoAttack); run with an explicit seed inside ``fork_rng``."""
    from pyautoattack.square import SquareAttack

    check_images(x)
    y = check_labels(y, x.shape[0])
    check_choice(norm, NORMS, "norm")
    attack = SquareAttack(model, p_init=0.8, n_queries=queries, eps=check_positive(eps, "eps"),
                          norm=AUTOATTACK_NORMS[norm], n_restarts=1, seed=seed, verbose=False,
                          device=x.device, resc_schedule=False)
    with isolated_rng(x.device):
        return attack.perturb(x, y).detach()


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖outputs − targets‖² (the diffusion-only attack's objective)."""
    return (outputs - targets).flatten(1).pow(2).sum(dim=1)


def diffusion_only(purify: Model, x: torch.Tensor, *, eps: float, norm: str = "linf",
                   steps: int = 20, step_size: float | None = None, eot: int = 1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Attack the purifier alone (DiffPure Table 15): PGD maximising ‖purify(x') − x‖² over the
    ε-ball, with EOT; the classifier is never consulted."""
    return pgd(purify, x, x.detach(), eps=eps, norm=norm, steps=steps, step_size=step_size,
               eot=eot, generator=generator, loss=squared_error)
