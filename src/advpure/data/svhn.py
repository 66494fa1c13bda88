"""SVHN (cropped digits) from its local ``.mat`` files: ``train_32x32.mat``, ``test_32x32.mat``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def load_svhn(split: str, root: str | Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images N×3×32×32 in [0, 1] (uint8 / 255) and int64 labels 0..9 (the files store the
    digit 0 as label 10; it is mapped to 0, as torchvision does)."""
    from scipy.io import loadmat

    if root is None:
        raise FileNotFoundError(f"svhn: expected --data-root DIR (Python: root=DIR) pointing at a folder with "
                                f"{', '.join(FILES.values())}; found no data_root")
    path = Path(root) / FILES[split]
    if not path.is_file():
        raise FileNotFoundError(f"svhn: expected {FILES[split]} under {root}, found none")
    try:
        content = loadmat(str(path))
        images = np.asarray(content["X"], dtype=np.uint8)      # 32×32×3×N
        labels = np.asarray(content["y"], dtype=np.int64).reshape(-1)
    except (KeyError, ValueError, TypeError, OSError) as err:
        raise ValueError(f"svhn: {path} is not an SVHN .mat file (X 32×32×3×N uint8, y N×1): "
                         f"{err}") from err
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.shape[3] != len(labels):
        raise ValueError(f"svhn: {path}: expected X of shape 32×32×3×N with N = {len(labels)} "
                         f"labels, found {images.shape}")
    x = torch.from_numpy(images.transpose(3, 2, 0, 1).copy()).float() / 255.0
    return x, torch.from_numpy(labels % 10)
