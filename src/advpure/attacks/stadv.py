"""StAdv (Xiao et al. 2018), a flow-field threat model, as DiffPure evaluates it (PAT's
settings: bound 0.05, Adam 0.01)."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt

from .._checks import check_positive
from .base import AttackSettings, check_attack_inputs, steps_bar
from .eot import Model
from .losses import cw_margin

DEFAULT_FLOW_BOUND = 0.05       # every flow component within 0.05 (normalised coordinates)
DEFAULT_LR = 0.01


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Resample x at the identity grid displaced by ``flow`` (N×2×H×W, x then y, in
    ``grid_sample``'s normalised coordinates [−1, 1]); bilinear, borders replicated."""
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, dtype=x.dtype, device=x.device),
                            torch.linspace(-1, 1, w, dtype=x.dtype, device=x.device),
                            indexing="ij")
    grid = torch.stack([xs, ys], dim=-1).expand(n, h, w, 2) + flow.permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def stadv(model: Model, x: torch.Tensor, y: torch.Tensor, *, bound: float = DEFAULT_FLOW_BOUND,
          steps: int = 100, lr: float = DEFAULT_LR, eot: int = 1,
          progress: bool = False) -> torch.Tensor:
    """StAdv (Xiao et al. 2018) as DiffPure evaluates it (PAT's settings): the images warped by
    ``stadv_flow``'s flow field (in [0, 1] by construction)."""
    flow = stadv_flow(model, x, y, bound=bound, steps=steps, lr=lr, eot=eot, progress=progress)
    with torch.no_grad():
        return flow_warp(x.detach(), flow).clamp(0.0, 1.0)


def stadv_flow(model: Model, x: torch.Tensor, y: torch.Tensor, *,
               bound: float = DEFAULT_FLOW_BOUND, steps: int = 100, lr: float = DEFAULT_LR,
               eot: int = 1, progress: bool = False) -> torch.Tensor:
    """StAdv's flow field f = bound·tanh(w) (N×2×H×W, every component within ``bound`` in
    normalised coordinates), w optimised by Adam (``lr``) for ``steps`` iterations on the CW
    margin averaged over ``eot`` batched draws; the last iterate."""
    y, _ = check_attack_inputs(x, y, model=model)
    bound = check_positive(bound, "StAdv bound")
    if not (isinstance(steps, int) and steps >= 1 and isinstance(eot, int) and eot >= 1):
        raise ValueError(f"stadv: expected integer steps >= 1 and eot >= 1, found {steps!r}, "
                         f"{eot!r}")
    x = x.detach()
    w = torch.zeros(x.shape[0], 2, *x.shape[2:], dtype=x.dtype, device=x.device,
                    requires_grad=True)
    optimiser = torch.optim.Adam([w], lr=check_positive(lr, "StAdv lr"))
    for _ in steps_bar(range(steps), progress, f"StAdv-{steps} EOT-{eot}"):
        warped = flow_warp(x, bound * torch.tanh(w))
        logits = model(warped.repeat(eot, 1, 1, 1))
        loss = -cw_margin(logits, y.repeat(eot)).sum() / eot
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return (bound * torch.tanh(w)).detach()



class StAdvSettings(AttackSettings):
    """A flow field of bounded components (no ε-ball: ``bound`` is the budget)."""

    name: Literal["stadv"] = "stadv"
    bound: PositiveFloat = Field(DEFAULT_FLOW_BOUND, description="flow bound")
    steps: PositiveInt = Field(20, description="Adam iterations")
    lr: PositiveFloat = Field(DEFAULT_LR, description="Adam learning rate")
    eot: PositiveInt = Field(1, description="EOT copies per gradient")

    def run(self, model, x, y, generator):
        return stadv(model, x, y, bound=self.bound, steps=self.steps, lr=self.lr, eot=self.eot)

    def label_parts(self) -> list[str]:
        parts = [f"bound={self.bound:g}", f"{self.steps} steps"]
        if self.eot > 1:
            parts.append(f"EOT {self.eot}")
        return parts + ([f"lr {self.lr:g}"] if self.lr != DEFAULT_LR else [])
