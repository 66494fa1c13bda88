"""The transfer-attack tricks DiffHammer's code offers its PGD (attacker.py 342-369, the
``PGD_CMD`` letters): M, momentum on the ℓ1-normalised gradient (MI-FGSM, Dong et al. 2018);
D, input diversity (Xie et al. 2019: a random rescale of the input); T, a Gaussian-smoothed
gradient (TI, Dong et al. 2019)."""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

DIVERSITY_P, DIVERSITY_SCALE = 0.5, (0.9, 1.1)     # kornia RandomAffine(0, scale=(0.9, 1.1))
SMOOTH_SIZE = 3                                    # RandomGaussianBlur((3, 3), 1/√3)


def rescale_randomly(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """D: with probability ½ per image, zoom about the centre by s ~ U[0.9, 1.1] (bilinear,
    zero padding), differentiably; the others pass unchanged."""
    n = x.shape[0]
    draw = dict(generator=generator, device=generator.device, dtype=torch.float64)
    low, high = DIVERSITY_SCALE
    scale = low + (high - low) * torch.rand(n, **draw)
    scale = torch.where(torch.rand(n, **draw) < DIVERSITY_P, scale, torch.ones_like(scale))
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = (1.0 / scale).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def smooth(g: torch.Tensor) -> torch.Tensor:
    """T: each channel of the gradient convolved with a 3×3 Gaussian of σ = 1/√3 (reflect
    padding)."""
    sigma = 1.0 / math.sqrt(SMOOTH_SIZE)
    r = torch.arange(SMOOTH_SIZE, dtype=g.dtype, device=g.device) - SMOOTH_SIZE // 2
    kernel_1d = torch.exp(-r ** 2 / (2 * sigma ** 2))
    kernel = (kernel_1d[:, None] * kernel_1d[None, :]) / kernel_1d.sum() ** 2
    c = g.shape[1]
    weight = kernel.expand(c, 1, SMOOTH_SIZE, SMOOTH_SIZE)
    padded = F.pad(g, [SMOOTH_SIZE // 2] * 4, mode="reflect")
    return F.conv2d(padded, weight, groups=c)


def l1_momentum(accumulated: torch.Tensor, g: torch.Tensor, mu: float) -> torch.Tensor:
    """M: μ·accumulated + g/‖g‖₁, the ℓ1 norm per image (the code's is over the whole batch,
    which ties an image's step to its batch)."""
    l1 = g.flatten(1).abs().sum(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))
    return mu * accumulated + g / l1
