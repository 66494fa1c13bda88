"""Attention masks from a classifier's block activations (Pei et al., "Divide and Conquer",
Eqs. 2–4 and Algorithm 2).

For each named block m the output A_m (C_m × H_m × W_m) of its last activation is reduced to

    G_m = (Σ_c |A_mc|^p)^{1/p}                          (Eq. 2, p = 2 by default)
    AM_m = normalise(Bi(G_m))                           (Eq. 3, bilinear to the image size)
    M = ∪_m 𝟙[AM_m > τ]                                 (Eq. 4)

``normalise`` is per-image min–max scaling to [0, 1] by default (the authors' code). The paper
writes a spatial softmax φ, which sums to 1 over the H·W pixels, so every value is far below
τ = 0.8 and the mask is empty; it is kept as ``"softmax"`` for completeness. Masks that come
out empty or full raise a ``MaskWarning``: then the method is uniform purification at t_s or t_l.

``convention="authors-code"`` computes the mask as GaozhengPei/Purification's
``purification.py`` does (the same at commits afa372c and fbb99ce): the classifier sees
``data_normalize(x)`` — ImageNet's mean and std applied to the image in the diffusion range
[−1, 1] (line 145; on grey images the channel means of those statistics) — G_m = Σ_c A_mc²
without the root (line 100), M = 𝟙[max_m AM_m ≥ τ], and a top-q mask keeps int(q·H·W) pixels.
The paper's convention (default) gives the classifier the [0, 1] image, takes the root of Eq. 2,
thresholds strictly and keeps ⌈q·H·W⌉ pixels.

The activations are read by forward hooks that exist only inside ``block_activations`` (the
classifier is also the defended model, so no hook may stay attached), and nothing is written.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, check_images

NORMALISATIONS = ("minmax", "softmax")
MASK_CONVENTIONS = ("paper", "authors-code")
DEFAULT_TAU = 0.8
IMAGENET_MEAN = (0.485, 0.456, 0.406)   # the authors' data_normalize (torchvision's Normalize)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _wideresnet_blocks(model: nn.Module) -> tuple[str, ...]:
    """The last activation of each block group, ``blockK.layer[-1].relu2``, and the final ReLU:
    the paper's four blocks of a WideResNet-28-10 (Table 7), as the authors' code hooks them
    (a pre-activation group ends in a residual sum, not in an activation)."""
    last = {k: len(getattr(model, f"block{k}").layer) - 1 for k in (1, 2, 3)}
    return tuple(f"block{k}.layer.{i}.relu2" for k, i in last.items()) + ("relu",)


DEFAULT_BLOCKS = {   # classifier class -> the module of each block's last activation
    "SmallCNN": ("features.1", "features.3", "features.6"),
    "ResNet18": ("layer1", "layer2", "layer3", "layer4"),     # each stage's output is its ReLU's
    "ResNet50": ("layer1", "layer2", "layer3", "layer4"),     # (the blocks' last op is the ReLU)
    "WideResNet": _wideresnet_blocks,
}


class MaskWarning(UserWarning):
    """An attention mask covers no pixel or every pixel of an image."""


def default_blocks(classifier: nn.Module) -> tuple[str, ...]:
    """The block outputs used for ``classifier``'s architecture; an error names the way out."""
    name = type(classifier).__name__
    if name not in DEFAULT_BLOCKS:
        raise ValueError(f"attention mask: no default blocks for a {name}; pass the module names "
                         f"of its block outputs (mask_blocks), e.g. from "
                         f"[n for n, _ in classifier.named_modules()]")
    blocks = DEFAULT_BLOCKS[name]
    return blocks(classifier) if callable(blocks) else blocks


@contextmanager
def block_activations(classifier: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, every forward pass of ``classifier`` stores the outputs of the named
    modules in the yielded dict; the hooks are removed on exit, also after an error."""
    modules = dict(classifier.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"attention mask: the classifier has no module {', '.join(missing)} "
                         f"(it has e.g. {', '.join(list(modules)[1:8])})")
    captured: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(module, inputs, output):
            captured[name] = output
        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in names]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def attention_maps(classifier: nn.Module, x: torch.Tensor, blocks: Sequence[str] | None = None,
                   power: float = 2.0, normalisation: str = "minmax",
                   convention: str = "paper") -> torch.Tensor:
    """AM_m for every block (Eqs. 2–3): a tensor M × N × H × W (no gradient: see ``attention_mask``)."""
    check_images(x)
    check_choice(normalisation, NORMALISATIONS, "mask normalisation")
    check_choice(convention, MASK_CONVENTIONS, "mask convention")
    names = tuple(blocks) if blocks is not None else default_blocks(classifier)
    with torch.no_grad(), block_activations(classifier, names) as captured:
        classifier(classifier_input(x, convention))
    root = convention == "paper"
    maps = [_normalise(_upsample(_channel_norm(captured[n], power, root), x.shape[-2:]),
                       normalisation) for n in names]
    return torch.stack(maps)


def classifier_input(x: torch.Tensor, convention: str = "paper") -> torch.Tensor:
    """What the mask's classifier sees: the [0, 1] image (paper), or the authors' code's
    ``data_normalize(2x − 1)``, ImageNet statistics on the diffusion-range image (grey images:
    the statistics' channel means)."""
    if convention == "paper":
        return x
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    if x.shape[1] != len(IMAGENET_MEAN):
        mean, std = mean.mean().expand(x.shape[1]), std.mean().expand(x.shape[1])
    shape = (1, x.shape[1], 1, 1)
    return (2.0 * x - 1.0 - mean.to(x).view(shape)) / std.to(x).view(shape)


def attention_mask(classifier: nn.Module, x: torch.Tensor, tau: float = DEFAULT_TAU,
                   blocks: Sequence[str] | None = None, power: float = 2.0,
                   normalisation: str = "minmax", top: float | None = None,
                   convention: str = "paper") -> torch.Tensor:
    """M = ∪_m 𝟙[AM_m > τ] (Eq. 4) as a float N × 1 × H × W tensor of 0s and 1s; with ``top``
    = q instead, the ⌈q·H·W⌉ pixels of highest attention max_m AM_m (the authors' ImageNet
    setting, q = 0.15; ties broken by position), whatever τ. ``convention="authors-code"``:
    the authors' classifier input, G without the root, AM ≥ τ and int(q·H·W) pixels.

    A hard threshold has zero derivative almost everywhere, so the mask is computed without a
    graph and is a constant in backward (as the authors do); attacks differentiate the rest.
    """
    maps = attention_maps(classifier, x, blocks, power, normalisation, convention)
    authors = convention == "authors-code"
    if top is not None:
        return top_pixels(maps.amax(dim=0), top, floor=authors).unsqueeze(1).to(x.dtype)
    above = maps >= tau if authors else maps > tau
    mask = above.any(dim=0).unsqueeze(1).to(x.dtype)
    _warn_if_degenerate(mask, tau)
    return mask


def top_pixels(attention: torch.Tensor, fraction: float, floor: bool = False) -> torch.Tensor:
    """N × H × W booleans: the ⌈fraction·H·W⌉ highest values of each image's map
    (``floor``: int(fraction·H·W), as the authors' ``threshold_percent_area``)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"attention mask: expected a fraction in (0, 1], found {fraction}")
    flat = attention.flatten(1)
    k = int(fraction * flat.shape[1]) if floor else math.ceil(fraction * flat.shape[1])
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen.scatter_(1, flat.topk(k, dim=1).indices, True)
    return chosen.view_as(attention)


def _channel_norm(activation: torch.Tensor, power: float, root: bool = True) -> torch.Tensor:
    """G_m = (Σ_c |A_mc|^p)^{1/p}: N × H_m × W_m (Eq. 2); without ``root``, Σ_c |A_mc|^p."""
    if activation.dim() != 4:
        raise ValueError(f"attention mask: expected a block output N×C×H×W, found shape "
                         f"{tuple(activation.shape)}")
    total = activation.abs().pow(power).sum(dim=1)
    return total.pow(1.0 / power) if root else total


def _upsample(g: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Bi(G_m): bilinear interpolation to the image size (N × H × W)."""
    return F.interpolate(g.unsqueeze(1), size=tuple(size), mode="bilinear",
                         align_corners=False).squeeze(1)


def _normalise(g: torch.Tensor, normalisation: str) -> torch.Tensor:
    """Per image: min–max to [0, 1] (a constant map becomes 0), or the spatial softmax φ."""
    flat = g.flatten(1)
    if normalisation == "softmax":
        return torch.softmax(flat, dim=1).view_as(g)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).view_as(g)


def _warn_if_degenerate(mask: torch.Tensor, tau: float) -> None:
    covered = mask.flatten(1).mean(dim=1)
    empty, full = int((covered == 0).sum()), int((covered == 1).sum())
    if empty or full:
        warnings.warn(f"attention mask (τ = {tau:g}): empty for {empty} and full for {full} of "
                      f"{mask.shape[0]} images; there the purification is uniform at t_s "
                      f"(empty) or t_l (full)", MaskWarning, stacklevel=3)
