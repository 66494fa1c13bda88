"""The discrete DDPM schedule, its mapping to continuous time and its documented error."""
import pytest
import torch

from advpure.diffusion import DiscreteSchedule, VPSchedule


def test_linear_betas_and_cumulative_product():
    s = DiscreteSchedule()
    assert s.betas.shape == (1001,) and float(s.betas[0]) == 0.0
    assert float(s.betas[1]) == pytest.approx(1e-4) and float(s.betas[-1]) == pytest.approx(0.02)
    torch.testing.assert_close(s.alpha_bars[1:], torch.cumprod(1 - s.betas[1:], 0))
    assert float(s.alpha_bar(0.0)) == 1.0 and float(s.sigma(0.0)) == 0.0


def test_levels_and_times_map_both_ways():
    s = DiscreteSchedule()
    assert int(s.level(0.07)) == 70 and float(s.time(70)) == pytest.approx(0.07)
    torch.testing.assert_close(s.snap(torch.tensor([0.0704, 0.0706])),
                               torch.tensor([0.070, 0.071], dtype=torch.float64))
    assert float(s.alpha_bar(0.0704)) == float(s.alpha_bars[70])
    assert s.continuous() == VPSchedule(beta_min=0.1, beta_max=20.0)
    with pytest.raises(ValueError, match="expected times in \\[0, 1\\]"):
        s.level(1.5)


def test_the_documented_mapping_error_bounds_hold():
    """discrete.py's docstring: |σ_n − σ(n/N)| ≤ 1.4e-3, |√ᾱ_n − √ᾱ(n/N)| ≤ 1e-3, relative ᾱ
    error below 0.11 % for t ≤ 0.3, relative σ error 2.5 % at n = 10 and 0.36 % at n = 100."""
    s = DiscreteSchedule()
    t = s.time(torch.arange(1, 1001))
    vp = s.continuous()
    sigma_d, sigma_c = s.sigma(t), vp.sigma(t)
    assert float((sigma_d - sigma_c).abs().max()) <= 1.4e-3
    assert float((s.alpha_bar(t).sqrt() - vp.alpha_bar(t).sqrt()).abs().max()) <= 1.0e-3
    rel_ab = (s.alpha_bar(t) / vp.alpha_bar(t) - 1).abs()
    assert float(rel_ab[:300].max()) < 1.1e-3
    rel_sigma = ((sigma_d - sigma_c) / sigma_c).abs()
    assert float(rel_sigma[9]) == pytest.approx(0.025, abs=1e-3)
    assert float(rel_sigma[99]) == pytest.approx(0.0036, abs=2e-4)
    assert float(rel_sigma[199:].max()) < 1e-3


@pytest.mark.parametrize("t_start,dt,levels", [
    (0.1, 1e-3, list(range(100, -1, -1))),
    (0.1, 0.01, list(range(100, -1, -10))),
    (0.07, 0.02, [70, 52, 35, 18, 0]),                   # 3.5 steps round to 4, evenly spaced
])
def test_respaced_grid(t_start, dt, levels):
    grid = DiscreteSchedule().grid(t_start, 0.0, dt)
    assert torch.round(grid * 1000).long().tolist() == levels


def test_grid_errors_say_what_was_expected():
    with pytest.raises(ValueError, match="expected dt >= 1/1000"):
        DiscreteSchedule().grid(0.1, 0.0, 1e-4)
    with pytest.raises(ValueError, match="by at least one level"):
        DiscreteSchedule().grid(0.0002, 0.0, 1e-3)
