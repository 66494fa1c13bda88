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


def smooth_classifier(seed: int = 5, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """A tiny twice-differentiable classifier of 8×8 images (tanh, no ReLU kinks), for
    second-order guidance gradients."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.Tanh(),
                              torch.nn.Linear(16, 10))
    return init_weights(net, torch.Generator().manual_seed(seed)).to(dtype)


def check_second_order_gradient(f, x: torch.Tensor, grads: dict[str, torch.Tensor]) -> None:
    """grads["second_order"] = float64 central finite differences of f at x (3 random
    directions); grads["first_order"], which drops the guidance's Hessian term, is off by
    orders of magnitude more."""
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        v = torch.randn(x.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            fd = float((f(x + 1e-6 * v) - f(x - 1e-6 * v)) / 2e-6)
        error = {order: abs(float((grad * v).sum()) - fd) for order, grad in grads.items()}
        assert error["second_order"] <= 1e-6 * abs(fd) + 1e-9, error
        assert error["first_order"] > 1e3 * error["second_order"] + 1e-6 * abs(fd), error


class CountingEps(torch.nn.Module):
    """An eps-model that counts its calls."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x_t, t):
        self.calls += 1
        return self.model(x_t, t)


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
