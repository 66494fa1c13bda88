"""NCSN++ / DDPM++ of score_sde (Song et al. 2021), the configuration DiffPure and COUP use on
CIFAR-10 (``configs/vp/cifar10_ddpmpp_deep_continuous.py``), with the upstream key names.

Only that configuration's choices are implemented: BigGAN residual blocks with skip rescaling,
positional time embedding, DDPM attention, no FIR resampling, no progressive growing, inputs
already centred in [−1, 1], no σ scaling. The module order of ``all_modules`` is the upstream
one, so ``parameters()`` follows the order of the EMA ``shadow_params`` list of a checkpoint.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

SQRT_HALF = 1.0 / math.sqrt(2.0)


def positional_embedding(labels: torch.Tensor, dim: int, max_positions: int = 10_000) -> torch.Tensor:
    """[sin, cos] of labels · 10000^(−k/(dim/2 − 1)), k < dim/2 (score_sde's DDPM embedding)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=labels.device)
                      * -(math.log(max_positions) / (half - 1)))
    args = labels.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(channels // 4, 32), channels, eps=1e-6)


class ResnetBlockBigGAN(nn.Module):
    """``ResnetBlockBigGANpp``: GN-act-(resample)-conv, + time, GN-act-dropout-conv, (x + h)/√2."""

    def __init__(self, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None,
                 up: bool = False, down: bool = False, dropout: float = 0.1):
        super().__init__()
        out_ch = out_ch or in_ch
        self.up, self.down = up, down
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        if temb_dim is not None:
            self.Dense_0 = nn.Linear(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        if in_ch != out_ch or up or down:
            self.Conv_2 = nn.Conv2d(in_ch, out_ch, 1)

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.avg_pool2d(x, 2) if self.down else x

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        h = self.resample(F.silu(self.GroupNorm_0(x)))
        x = self.resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        return (x + h) * SQRT_HALF


class NIN(nn.Module):
    """A 1×1 layer stored as W [in, out] and b [out] (score_sde's ``NIN``)."""

    def __init__(self, in_dim: int, units: int):
        super().__init__()
        self.W = nn.Parameter(torch.randn(in_dim, units) / math.sqrt(in_dim))
        self.b = nn.Parameter(torch.zeros(units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.W) + self.b[:, None, None]


class AttnBlock(nn.Module):
    """``AttnBlockpp``: single-head self-attention over all pixels, (x + h)/√2."""

    def __init__(self, channels: int):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        self.NIN_0, self.NIN_1, self.NIN_2, self.NIN_3 = (NIN(channels, channels) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = self.NIN_0(h), self.NIN_1(h), self.NIN_2(h)
        w = torch.einsum("bchw,bcij->bhwij", q, k) * (c ** -0.5)
        w = F.softmax(w.reshape(b, hgt, wid, hgt * wid), dim=-1).reshape(b, hgt, wid, hgt, wid)
        h = self.NIN_3(torch.einsum("bhwij,bcij->bchw", w, v))
        return (x + h) * SQRT_HALF


class NCSNpp(nn.Module):
    """The score_sde network: ``forward(x, labels)`` with x in [−1, 1] and float time labels
    (t·999 for continuous VP models); returns the raw, eps-like output."""

    def __init__(self, image_size: int = 32, nf: int = 128, ch_mult: tuple[int, ...] = (1, 2, 2, 2),
                 num_res_blocks: int = 8, attn_resolutions: tuple[int, ...] = (16,),
                 dropout: float = 0.1, channels: int = 3, sigma_min: float = 0.01,
                 sigma_max: float = 50.0, num_scales: int = 1000):
        super().__init__()
        self.nf, self.num_res_blocks = nf, num_res_blocks
        self.attn_resolutions, self.levels = tuple(attn_resolutions), len(ch_mult)
        sigmas = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_scales,
                                          dtype=torch.float64))
        self.register_buffer("sigmas", sigmas)   # in the checkpoints; unused (scale_by_sigma off)
        self.all_modules = nn.ModuleList(self._modules_in_order(image_size, ch_mult, dropout,
                                                                channels))

    def _modules_in_order(self, image_size: int, ch_mult: tuple[int, ...], dropout: float,
                          channels: int) -> list[nn.Module]:
        nf, temb = self.nf, 4 * self.nf
        block = lambda i, o=None, **kw: ResnetBlockBigGAN(i, o, temb, dropout=dropout, **kw)  # noqa: E731
        mods: list[nn.Module] = [nn.Linear(nf, temb), nn.Linear(temb, temb),
                                 nn.Conv2d(channels, nf, 3, padding=1)]
        skips, ch = [nf], nf
        for level, mult in enumerate(ch_mult):
            for _ in range(self.num_res_blocks):
                mods.append(block(ch, nf * mult))
                ch = nf * mult
                if image_size >> level in self.attn_resolutions:
                    mods.append(AttnBlock(ch))
                skips.append(ch)
            if level != self.levels - 1:
                mods.append(block(ch, down=True))
                skips.append(ch)
        mods += [block(ch), AttnBlock(ch), block(ch)]
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(self.num_res_blocks + 1):
                mods.append(block(ch + skips.pop(), nf * mult))
                ch = nf * mult
            if image_size >> level in self.attn_resolutions:
                mods.append(AttnBlock(ch))
            if level != 0:
                mods.append(block(ch, up=True))
        return mods + [group_norm(ch), nn.Conv2d(ch, channels, 3, padding=1)]

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        mods = iter(self.all_modules)
        temb = next(mods)(positional_embedding(labels, self.nf))
        temb = next(mods)(F.silu(temb))
        hs = [next(mods)(x)]
        for level in range(self.levels):
            for _ in range(self.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if h.shape[-1] in self.attn_resolutions:
                    h = next(mods)(h)
                hs.append(h)
            if level != self.levels - 1:
                hs.append(next(mods)(hs[-1], temb))
        h = next(mods)(hs[-1], temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)
        for level in reversed(range(self.levels)):
            for _ in range(self.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if h.shape[-1] in self.attn_resolutions:
                h = next(mods)(h)
            if level != 0:
                h = next(mods)(h, temb)
        h = F.silu(next(mods)(h))
        return next(mods)(h)
