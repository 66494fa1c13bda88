import math

import pytest
import torch

from advpure.diffusion import VPSchedule, add_noise


@pytest.mark.parametrize("t", [0.0, 1e-4, 0.1, 0.5, 1.0])
def test_vp_schedule_matches_closed_forms(t):
    s = VPSchedule()
    integral = 0.1 * t + 0.5 * (20.0 - 0.1) * t * t
    assert float(s.beta(t)) == pytest.approx(0.1 + 19.9 * t, rel=1e-12)
    assert float(s.integral_beta(t)) == pytest.approx(integral, rel=1e-12, abs=1e-15)
    assert float(s.alpha_bar(t)) == pytest.approx(math.exp(-integral), rel=1e-12)
    assert float(s.sigma(t)) == pytest.approx(math.sqrt(-math.expm1(-integral)), rel=1e-12)
    assert float(s.alpha_bar(t) + s.sigma(t) ** 2) == pytest.approx(1.0, abs=1e-12)


def test_integral_beta_is_the_integral_of_beta():
    s, t = VPSchedule(), torch.linspace(0, 1, 100001, dtype=torch.float64)
    trapezoid = torch.trapezoid(s.beta(t), t)
    assert float(trapezoid) == pytest.approx(float(s.integral_beta(1.0)), rel=1e-9)


def test_add_noise_gives_the_forward_marginal():
    s, g = VPSchedule(), torch.Generator().manual_seed(0)
    x0 = torch.full((200000, 1), 0.7, dtype=torch.float64)
    t = torch.full((len(x0),), 0.3, dtype=torch.float64)
    x_t = add_noise(x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64), s)
    assert float(x_t.mean()) == pytest.approx(0.7 * math.sqrt(float(s.alpha_bar(0.3))), abs=5e-3)
    assert float(x_t.var()) == pytest.approx(float(s.sigma(0.3)) ** 2, rel=1e-2)


def test_add_noise_takes_per_sample_times():
    s = VPSchedule()
    x0, eps = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    x_t = add_noise(x0, torch.tensor([0.0, 1.0]), eps, s)
    assert torch.allclose(x_t[0], torch.ones(1, 2, 2))
    assert torch.allclose(x_t[1], torch.full((1, 2, 2), float(s.alpha_bar(1.0).sqrt())))
