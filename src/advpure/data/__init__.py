"""Datasets as [0, 1] image tensors and int64 labels; fixed subsets for robust accuracy."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from .._checks import check_choice
from .cifar import load_cifar
from .digits import load_digits

DATASETS = ("digits", "cifar10", "cifar100")
SPLITS = ("train", "test")


def load(name: str, split: str = "test", root: str | Path | None = None,
         size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a dataset split as (images N×C×H×W in [0, 1], int64 labels).

    ``digits`` ships with scikit-learn; ``cifar10``/``cifar100`` read ``root`` (never
    downloaded). ``size`` resizes to size×size by bilinear interpolation.
    """
    check_choice(name, DATASETS, "dataset")
    check_choice(split, SPLITS, "split")
    x, y = load_digits(split) if name == "digits" else load_cifar(name, split, root)
    if size is not None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size: expected a positive integer, found {size!r}")
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, y


def fixed_subset(x: torch.Tensor, y: torch.Tensor, n: int,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n images drawn without replacement by ``seed``: (x[idx], y[idx], idx), idx sorted."""
    if not isinstance(n, int) or not 0 < n <= len(y):
        raise ValueError(f"fixed_subset: expected 0 < n <= {len(y)}, found {n!r}")
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return x[idx], y[idx], idx


__all__ = ["DATASETS", "fixed_subset", "load"]
