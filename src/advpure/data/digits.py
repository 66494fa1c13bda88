"""scikit-learn's 1797 handwritten 8×8 digits, shipped inside the package: the embedded default."""
from __future__ import annotations

from functools import lru_cache

import torch

TEST_FRACTION = 0.2   # 359 test images, 1438 train images
SPLIT_SEED = 0        # the split is a fixed permutation drawn from this seed


def split_indices(n: int) -> dict[str, torch.Tensor]:
    """The fixed train/test split: a permutation of range(n) from SPLIT_SEED, last 20% is test."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = round(TEST_FRACTION * n)
    return {"train": perm[n_test:].sort().values, "test": perm[:n_test].sort().values}


@lru_cache(maxsize=1)
def _all_digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(bunch.target, dtype=torch.long)


def load_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images N×1×8×8 in [0, 1] (grey levels 0..16 divided by 16) and int64 labels."""
    images, labels = _all_digits()
    idx = split_indices(len(labels))[split]
    return images[idx], labels[idx]          # advanced indexing: fresh copies
