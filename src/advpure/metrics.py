"""Image similarity measures that need no pretrained network: SSIM (Wang et al. 2004).

GDMP guides its reverse process by SSIM to the input; the LF attack reports SSIM as its
perceptual distance (LPIPS, which DiffBreak reports, needs pretrained AlexNet/VGG weights that
cannot be had offline).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2       # K1 = 0.01, K2 = 0.03 with L = 1 (as pytorch-ssim)


def gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    """A normalized size×size Gaussian window, one per channel (for a grouped convolution)."""
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = SSIM_WINDOW,
         sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Per-image mean SSIM of two N×C×H×W batches (Wang et al. 2004, Eq. 13): local means,
    variances and covariance under a Gaussian window (zero padding, as pytorch-ssim), then
    ((2μ_aμ_b + C1)(2σ_ab + C2)) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2)) averaged over pixels.
    Differentiable in both arguments; 1 for identical images."""
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"ssim: expected two N×C×H×W batches of one shape, found "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    channels = a.shape[1]
    w = gaussian_window(window, sigma, channels, a)

    def local(v: torch.Tensor) -> torch.Tensor:
        return F.conv2d(v, w, padding=window // 2, groups=channels)

    mu_a, mu_b = local(a), local(b)
    var_a = local(a * a) - mu_a ** 2
    var_b = local(b * b) - mu_b ** 2
    cov = local(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_a ** 2 + mu_b ** 2 + SSIM_C1) * (var_a + var_b + SSIM_C2))
    return index.flatten(1).mean(dim=1)
