"""Every VP sampler with the analytic score of Gaussian data recovers the data distribution."""
import pytest
import torch

from advpure.diffusion import SAMPLERS, PerSampleNoise, VPSchedule, add_noise, reverse_sde
from conftest import GaussianEps


class BatchNoise:
    """Fast i.i.d. noise for Monte-Carlo tests with many samples (one generator for the batch)."""

    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def randn_like(self, x):
        return torch.randn(x.shape, generator=self.g, dtype=x.dtype)


CASES = {
    "1d": (torch.tensor([0.5]), torch.tensor([[0.09]])),
    "2d": (torch.tensor([0.3, -0.4]), torch.tensor([[0.16, 0.06], [0.06, 0.09]])),
}


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("t_start", [0.3, 1.0])
def test_samplers_reproduce_gaussian_mean_and_covariance(sampler, case, t_start):
    mu, cov = (v.double() for v in CASES[case])
    schedule, n = VPSchedule(), 40000
    model = GaussianEps(mu, cov, schedule)
    g = torch.Generator().manual_seed(1)
    data = mu + torch.randn(n, len(mu), generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    x_t = add_noise(data, torch.full((n,), t_start, dtype=torch.float64),
                    torch.randn(data.shape, generator=g, dtype=torch.float64), schedule)
    x0 = SAMPLERS[sampler](model, x_t, schedule, t_start=t_start, dt=1e-3, noise=BatchNoise(2))
    mean_tol = 4 * cov.diagonal().max().sqrt() / n ** 0.5 + 5e-3
    torch.testing.assert_close(x0.mean(0), mu, atol=float(mean_tol), rtol=0)
    torch.testing.assert_close(torch.cov(x0.T).reshape(cov.shape), cov, atol=0.01, rtol=0.05)


def test_reverse_sde_takes_round_steps_and_reports_them():
    seen = []
    x = torch.zeros(3, 1, dtype=torch.float64)
    model = GaussianEps(torch.zeros(1, dtype=torch.float64), torch.eye(1, dtype=torch.float64),
                        VPSchedule())
    reverse_sde(model, x, VPSchedule(), t_start=0.1, dt=0.01,
                noise=PerSampleNoise.from_seeds([0, 1, 2]), callback=lambda i, t, x: seen.append(t))
    assert len(seen) == 10 and seen[-1] == 0.0
