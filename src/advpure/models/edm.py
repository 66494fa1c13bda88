"""EDM's preconditioned DDPM++ network (Karras et al. 2022, ``EDMPrecond(SongUNet)``) with the
upstream key names, for ``edm-cifar10-32x32-uncond-vp.pkl``-style snapshots read by
``safe_pickle`` (nothing from the pickle is executed).

Implemented: ``SongUNet`` with positional noise embedding and standard encoder and decoder (the
``--arch=ddpmpp`` configuration), no class labels; augmentation labels are accepted by the
architecture (``map_augment``) and unused at inference, as upstream.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Conv2d(nn.Module):
    """EDM's convolution with optional 2× resampling by the FIR filter ``resample_filter``
    (kernel 0: resampling only)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, up: bool = False,
                 down: bool = False, resample_filter: tuple[int, ...] = (1, 1)):
        super().__init__()
        self.in_channels, self.out_channels, self.up, self.down = in_channels, out_channels, up, down
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel, kernel)) if kernel else None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if kernel else None
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        f = torch.outer(f, f)[None, None] / f.sum().square()
        self.register_buffer("resample_filter", f if up or down else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.resample_filter
        f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0
        if self.up:
            x = F.conv_transpose2d(x, (4 * f).tile(self.in_channels, 1, 1, 1),
                                   groups=self.in_channels, stride=2, padding=f_pad)
        if self.down:
            x = F.conv2d(x, f.tile(self.in_channels, 1, 1, 1), groups=self.in_channels,
                         stride=2, padding=f_pad)
        if self.weight is not None:
            x = F.conv2d(x, self.weight, self.bias, padding=self.weight.shape[-1] // 2)
        return x


class GroupNorm(nn.Module):
    def __init__(self, num_channels: int, num_groups: int = 32, eps: float = 1e-5):
        super().__init__()
        self.num_groups, self.eps = min(num_groups, num_channels // 4), eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class UNetBlock(nn.Module):
    """Residual block (additive time conditioning), optional one-head attention; both
    branches scaled by √½."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False,
                 down: bool = False, attention: bool = False, dropout: float = 0.0,
                 resample_filter: tuple[int, ...] = (1, 1)):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.attention, self.dropout = attention, dropout
        self.norm0 = GroupNorm(in_channels, eps=1e-6)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down,
                            resample_filter=resample_filter)
        self.affine = Linear(emb_channels, out_channels)
        self.norm1 = GroupNorm(out_channels, eps=1e-6)
        self.conv1 = Conv2d(out_channels, out_channels, 3)
        self.skip = None
        if out_channels != in_channels or up or down:
            self.skip = Conv2d(in_channels, out_channels, 1, up=up, down=down,
                               resample_filter=resample_filter)
        if attention:
            self.norm2 = GroupNorm(out_channels, eps=1e-6)
            self.qkv = Conv2d(out_channels, 3 * out_channels, 1)
            self.proj = Conv2d(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        skip_scale = math.sqrt(0.5)
        h = self.conv0(F.silu(self.norm0(x)))
        h = F.silu(self.norm1(h + self.affine(emb)[:, :, None, None]))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = (h + (self.skip(x) if self.skip is not None else x)) * skip_scale
        if not self.attention:
            return x
        q, k, v = self.qkv(self.norm2(x)).reshape(x.shape[0], x.shape[1], 3, -1).unbind(2)
        w = torch.einsum("ncq,nck->nqk", q, k / math.sqrt(k.shape[1])).softmax(dim=2)
        a = torch.einsum("nqk,nck->ncq", w, v)
        return (self.proj(a.reshape(*x.shape)) + x) * skip_scale


def positional_embedding(labels: torch.Tensor, channels: int, max_positions: int = 10_000) -> torch.Tensor:
    """EDM's ``PositionalEmbedding(endpoint=True)`` followed by SongUNet's sin/cos swap:
    [sin, cos] of labels · (1/10000)^(k/(channels/2 − 1))."""
    half = channels // 2
    freqs = (1 / max_positions) ** (torch.arange(half, dtype=torch.float32,
                                                 device=labels.device) / (half - 1))
    args = torch.outer(labels, freqs.to(labels.dtype))
    return torch.cat([args.sin(), args.cos()], dim=1)


class SongUNet(nn.Module):
    """``SongUNet(x, noise_labels)`` (DDPM++ of EDM) for images in EDM's scaling."""

    def __init__(self, img_resolution: int = 32, in_channels: int = 3, out_channels: int = 3,
                 model_channels: int = 128, channel_mult: tuple[int, ...] = (2, 2, 2),
                 num_blocks: int = 4, attn_resolutions: tuple[int, ...] = (16,),
                 dropout: float = 0.13, augment_dim: int = 9,
                 resample_filter: tuple[int, ...] = (1, 1)):
        super().__init__()
        emb = 4 * model_channels
        block = lambda i, o, **kw: UNetBlock(i, o, emb, dropout=dropout,  # noqa: E731
                                             resample_filter=resample_filter, **kw)
        self.noise_channels = model_channels
        self.map_augment = Linear(augment_dim, model_channels, bias=False) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb)
        self.map_layer1 = Linear(emb, emb)
        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(cout, model_channels, 3)
                cout = model_channels
            else:
                self.enc[f"{res}x{res}_down"] = block(cout, cout, down=True)
            for idx in range(num_blocks):
                self.enc[f"{res}x{res}_block{idx}"] = block(cout, model_channels * mult,
                                                           attention=res in attn_resolutions)
                cout = model_channels * mult
        skips = [b.out_channels for b in self.enc.values()]
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = block(cout, cout, attention=True)
                self.dec[f"{res}x{res}_in1"] = block(cout, cout)
            else:
                self.dec[f"{res}x{res}_up"] = block(cout, cout, up=True)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{idx}"] = block(
                    cin, cout, attention=idx == num_blocks and res in attn_resolutions)
        self.dec[f"{img_resolution}x{img_resolution}_aux_norm"] = GroupNorm(cout, eps=1e-6)
        self.dec[f"{img_resolution}x{img_resolution}_aux_conv"] = Conv2d(cout, out_channels, 3)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor) -> torch.Tensor:
        emb = positional_embedding(noise_labels, self.noise_channels)
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        *blocks, norm, conv = self.dec.values()
        for block in blocks:
            if x.shape[1] != block.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return conv(F.silu(norm(x)))


class EDMPrecond(nn.Module):
    """The denoiser D(x; σ) = c_skip x + c_out F(c_in x, ¼ ln σ) (Karras et al. 2022, Table 1)."""

    def __init__(self, img_resolution: int = 32, img_channels: int = 3, sigma_data: float = 0.5,
                 **model_kwargs):
        super().__init__()
        self.sigma_data = sigma_data
        self.model = SongUNet(img_resolution, img_channels, img_channels, **model_kwargs)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.to(x.dtype).reshape(-1, 1, 1, 1)
        var = sigma ** 2 + self.sigma_data ** 2
        f_x = self.model(x / var.sqrt(), sigma.log().flatten() / 4)
        return (self.sigma_data ** 2 / var) * x + (sigma * self.sigma_data / var.sqrt()) * f_x
