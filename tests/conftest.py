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


def weighted_output_loss(purifier, gradient: str = "exact"):
    """(f, x): f(x) = ⟨purifier(x), w⟩ with fixed noise and random weights w, at a float64 batch
    x of two images inside (0.3, 0.7) — the attack loss of the gradient tests."""
    g = torch.Generator().manual_seed(3)
    x = 0.3 + 0.4 * torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    weights = torch.randn(x.shape, generator=g, dtype=torch.float64)

    def f(x):
        from advpure.diffusion import PerSampleNoise

        return (purifier(x, PerSampleNoise.from_seeds([7, 8]), gradient=gradient) * weights).sum()
    return f, x


def gradient_at(f, x: torch.Tensor) -> torch.Tensor:
    """∇f(x)."""
    xg = x.clone().requires_grad_(True)
    return torch.autograd.grad(f(xg), xg)[0]


class PixelGaussianEps(torch.nn.Module):
    """The exact eps of N(mu, s²) pixels: √(1 − ᾱ)(x − √ᾱ mu) / (ᾱ s² + 1 − ᾱ), on ``schedule``
    (the discrete DDPM one by default, or the VP one)."""

    def __init__(self, mu: float = 0.2, var: float = 0.3, schedule=None):
        super().__init__()
        from advpure.diffusion import DiscreteSchedule

        self.mu, self.var = mu, var
        self.schedule = DiscreteSchedule() if schedule is None else schedule

    def forward(self, x, t):
        a = self.schedule.alpha_bar(t).to(x.dtype).view(-1, 1, 1, 1)
        return (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.var + 1 - a)


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
