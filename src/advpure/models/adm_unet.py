"""The ADM UNet of guided-diffusion (Dhariwal & Nichol 2021) with the upstream key names, as
DiffPure uses it on ImageNet (``256x256_diffusion_uncond.pt``).

Implemented: scale-shift norm, BigGAN-style up/down residual blocks (``resblock_updown``),
legacy QKV attention order, no class conditioning, optional fp16 trunk (the upstream
``convert_to_fp16``: the convolutions of the input, middle and output blocks in half precision;
group norms, linears, the time embedding and the final layer stay in float32).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10_000) -> torch.Tensor:
    """[cos, sin] of t · max_period^(−k/(dim/2)), k < dim/2 (guided-diffusion's embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                           device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) computed in float32 whatever the input precision."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def resample(x: torch.Tensor, up: bool, down: bool) -> torch.Tensor:
    if up:
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return F.avg_pool2d(x, 2) if down else x


class ResBlock(nn.Module):
    """Residual block with scale-shift time conditioning: GN(h)·(1 + scale) + shift."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None,
                 dropout: float = 0.0, up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.up, self.down = up, down
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = resample(self.in_layers[:-1](x), self.up, self.down)
        h = self.in_layers[-1](h)
        x = resample(x, self.up, self.down)
        scale, shift = self.emb_layers(emb).type(h.dtype)[:, :, None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        return self.skip_connection(x) + self.out_layers[1:](h)


class AttentionBlock(nn.Module):
    """Multi-head self-attention with the legacy QKV layout (heads split before q, k, v)."""

    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        self.heads = channels // head_channels
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        length, ch = qkv.shape[-1], c // self.heads
        q, k, v = qkv.reshape(b * self.heads, 3 * ch, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        h = torch.einsum("bts,bcs->bct", weight, v).reshape(b, -1, length)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class EmbedSequential(nn.Sequential):
    """``TimestepEmbedSequential``: passes the time embedding to the blocks that take it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, (ResBlock, AttentionBlock)) else layer(x)
        return x


class ADMUNet(nn.Module):
    """``UNetModel(x, timesteps)`` for x in [−1, 1] and integer timesteps 0..999; the output has
    ``out_channels`` channels (6 with learned variance: eps, then the variance values)."""

    def __init__(self, image_size: int = 256, model_channels: int = 256,
                 channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4), num_res_blocks: int = 2,
                 attention_resolutions: tuple[int, ...] = (32, 16, 8), head_channels: int = 64,
                 in_channels: int = 3, out_channels: int = 6, dropout: float = 0.0,
                 use_fp16: bool = False):
        super().__init__()
        attention_ds = {image_size // res for res in attention_resolutions}
        self.model_channels, emb = model_channels, 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(),
                                        nn.Linear(emb, emb))
        ch = model_channels * channel_mult[0]
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3,
                                                                     padding=1))])
        skips, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb, model_channels * mult, dropout)]
                ch = model_channels * mult
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, head_channels))
                self.input_blocks.append(EmbedSequential(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(EmbedSequential(ResBlock(ch, emb, ch, dropout, down=True)))
                skips.append(ch)
                ds *= 2
        self.middle_block = EmbedSequential(ResBlock(ch, emb, dropout=dropout),
                                            AttentionBlock(ch, head_channels),
                                            ResBlock(ch, emb, dropout=dropout))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), emb, model_channels * mult, dropout)]
                ch = model_channels * mult
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, head_channels))
                if level and i == num_res_blocks:
                    layers.append(ResBlock(ch, emb, ch, dropout, up=True))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(),
                                 nn.Conv2d(model_channels * channel_mult[0], out_channels, 3,
                                           padding=1))
        self.dtype = torch.float32
        if use_fp16:
            self.convert_to_fp16()

    def convert_to_fp16(self) -> None:
        """Half-precision convolutions in the trunk, as upstream (``convert_module_to_f16``)."""
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            for layer in part.modules():
                if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
                    layer.half()
        self.dtype = torch.float16

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        h, hs = x.type(self.dtype), []
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))
