"""Shared fixtures: tiny random models (no training needed), the ../shared folder, Gaussian data."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from advpure.diffusion.analytic import GaussianEps  # noqa: F401  (re-exported for tests)
from advpure.models import SmallCNN, SmallUNet
from advpure.training.common import init_weights

SHARED = Path(__file__).resolve().parents[2] / "shared"


def tiny_unet(dtype: torch.dtype = torch.float32, seed: int = 0) -> SmallUNet:
    model = init_weights(SmallUNet(in_channels=1, base=8, mults=(1, 2)),
                         torch.Generator().manual_seed(seed))
    return model.to(dtype).eval().requires_grad_(False)


def tiny_cnn(dtype: torch.dtype = torch.float32, seed: int = 1) -> SmallCNN:
    model = init_weights(SmallCNN(in_channels=1, num_classes=10, width=4),
                         torch.Generator().manual_seed(seed))
    return model.to(dtype).eval().requires_grad_(False)


@pytest.fixture
def digits_batch() -> tuple[torch.Tensor, torch.Tensor]:
    import advpure

    x, y = advpure.data.load("digits", "test")
    return x[:6], y[:6]


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present beside the checkout")
    return SHARED
