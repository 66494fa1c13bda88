"""Datasets as [0, 1] image tensors and int64 labels; fixed subsets for robust accuracy."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from .._checks import check_choice
from .cifar import load_cifar
from .digits import load_digits
from .imagenet import image_files, load_imagenet
from .svhn import load_svhn

DATASETS = ("digits", "cifar10", "cifar100", "svhn", "imagenet")
SPLITS = ("train", "test")     # ImageNet's "test" is its validation set (root/val)


def load(name: str, split: str = "test", root: str | Path | None = None,
         size: int | None = None, indices: torch.Tensor | None = None
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a dataset split as (images N×C×H×W in [0, 1], int64 labels).

    ``digits`` ships with scikit-learn; ``cifar10``/``cifar100``/``svhn``/``imagenet`` read
    ``root`` (never downloaded). ``indices`` keeps those images only (ImageNet then decodes
    only those). ``size`` resizes to size×size by bilinear interpolation; for ImageNet it is
    the centre-crop size of the papers' preprocessing (default 224).
    """
    check_choice(name, DATASETS, "dataset")
    check_choice(split, SPLITS, "split")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ValueError(f"size: expected a positive integer, found {size!r}")
    if name == "imagenet":
        if split != "test":
            raise ValueError("imagenet: only the validation images are read (split 'test')")
        return load_imagenet(root, indices, crop=size or 224)
    x, y = _load_whole(name, split, root)
    if indices is not None:
        x, y = x[indices], y[indices]
    if size is not None:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, y


def labels(name: str, split: str = "test", root: str | Path | None = None) -> torch.Tensor:
    """The labels of a split, without decoding ImageNet's images."""
    check_choice(name, DATASETS, "dataset")
    if name == "imagenet":
        return image_files(root)[1]
    return load(name, split, root)[1]


def _load_whole(name: str, split: str, root: str | Path | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "digits":
        return load_digits(split)
    return load_svhn(split, root) if name == "svhn" else load_cifar(name, split, root)


def fixed_subset(x: torch.Tensor, y: torch.Tensor, n: int,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n images drawn without replacement by ``seed``: (x[idx], y[idx], idx), idx sorted."""
    if not isinstance(n, int) or not 0 < n <= len(y):
        raise ValueError(f"fixed_subset: expected 0 < n <= {len(y)}, found {n!r}")
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return x[idx], y[idx], idx


__all__ = ["DATASETS", "fixed_subset", "labels", "load"]
