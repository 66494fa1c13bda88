"""Every sampler with the analytic score of Gaussian data keeps the data distribution; DDIM(η=0)
is an ODE integrator; DDPM and the reverse VP-SDE agree; randomized t* holds samples back."""
import pytest
import torch

from advpure.diffusion import (SAMPLERS, DiscreteSchedule, PerSampleNoise, VPSchedule, add_noise,
                               ddim, ddpm, probability_flow_ode, reverse_sde)
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
# (sampler name, its keyword options): every sampler, and the options that change its law
VARIANTS = {"sde": ("sde", {}), "ode": ("ode", {}), "ld": ("ld", {}),
            "ddpm": ("ddpm", {}), "ddpm-beta": ("ddpm", {"variance": "beta"}),
            "ddim": ("ddim", {}), "ddim-eta-0.5": ("ddim", {"eta": 0.5}),
            "ddim-eta-1": ("ddim", {"eta": 1.0})}
STARTS = {"1d": [0.3, 1.0], "2d": [0.3]}      # t* (None: LD-SDE has none)
GRID = [(v, c, t) for v in VARIANTS for c in CASES
        for t in (STARTS[c] if SAMPLERS[VARIANTS[v][0]].uses_t_star else [None])]


def gaussian_data(case, n, g):
    mu, cov = (v.double() for v in CASES[case])
    return mu, cov, mu + torch.randn(n, len(mu), generator=g, dtype=torch.float64) @ \
        torch.linalg.cholesky(cov).T


def schedule_of(name):
    return VPSchedule() if SAMPLERS[name].time == "continuous" else DiscreteSchedule()


def assert_gaussian(x, mu, cov):
    mean_tol = 4 * cov.diagonal().max().sqrt() / len(x) ** 0.5 + 5e-3
    torch.testing.assert_close(x.mean(0), mu, atol=float(mean_tol), rtol=0)
    torch.testing.assert_close(torch.cov(x.T).reshape(cov.shape), cov, atol=0.01, rtol=0.05)


@pytest.mark.parametrize("variant,case,t_start", GRID)
def test_samplers_keep_the_gaussian_data_distribution(variant, case, t_start):
    name, options = VARIANTS[variant]
    spec, schedule, g = SAMPLERS[name], schedule_of(name), torch.Generator().manual_seed(1)
    mu, cov, data = gaussian_data(case, 40000, g)
    model = GaussianEps(mu, cov, schedule)
    if t_start is None:                                   # LD-SDE starts at the data itself
        x0 = spec.run(model, data, schedule, dt=1e-3, noise=BatchNoise(2), **options)
    else:
        t = torch.full((len(data),), t_start, dtype=torch.float64)
        x_t = add_noise(data, t, torch.randn(data.shape, generator=g, dtype=torch.float64), schedule)
        x0 = spec.run(model, x_t, schedule, t_start=t_start, dt=1e-3, noise=BatchNoise(2), **options)
    assert_gaussian(x0, mu, cov)


def ode_flow_map(x, mu, var0, alpha_bar):
    """The exact probability-flow map x(t) -> x(0) for 1-d N(mu, var0) data: affine."""
    return mu + (var0 / (alpha_bar * var0 + 1 - alpha_bar)) ** 0.5 * (x - alpha_bar ** 0.5 * mu)


def test_ddim_eta0_converges_to_the_probability_flow_ode():
    schedule, mu, var0, t_start = DiscreteSchedule(), 0.5, 0.09, 0.5
    model = GaussianEps(torch.tensor([mu], dtype=torch.float64),
                        torch.tensor([[var0]], dtype=torch.float64), schedule)
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    exact = ode_flow_map(x, mu, var0, float(schedule.alpha_bar(t_start)))
    errors = [float((ddim(model, x, schedule, t_start=t_start, dt=dt, noise=None) - exact).abs().max())
              for dt in (0.1, 0.02, 0.005, 0.001)]
    ratios = [a / b for a, b in zip(errors, errors[1:])]          # dt shrinks 5, 4 and 5 times
    assert min(ratios) > 3 and errors[-1] < 5e-3, errors          # first-order convergence
    # and DDIM on every level against the Euler VP-ODE of the continuous schedule it discretises
    vp_model = GaussianEps(model.mu, torch.tensor([[var0]], dtype=torch.float64), VPSchedule())
    ode = probability_flow_ode(vp_model, x, VPSchedule(), t_start=t_start, dt=1e-4)
    ddim_out = ddim(vp_model, x, schedule, t_start=t_start, dt=1e-3, noise=None)
    torch.testing.assert_close(ddim_out, ode, atol=1e-2, rtol=0)


def test_ddpm_and_the_reverse_sde_agree_in_distribution_at_matching_times():
    """A continuous-time model driven by DDPM on the levels n = 1000·t and by the reverse VP-SDE
    on t: same mean and covariance at t = 0.2, 0.1, 0.05 and 0."""
    g = torch.Generator().manual_seed(3)
    mu, cov, data = gaussian_data("2d", 40000, g)
    vp, t_start = VPSchedule(), 0.3
    model = GaussianEps(mu, cov, vp)                       # exact for the continuous marginals
    x_t = add_noise(data, torch.full((len(data),), t_start, dtype=torch.float64),
                    torch.randn(data.shape, generator=g, dtype=torch.float64), vp)
    checkpoints = {}

    def record(name):
        def callback(i, t, x):
            if round(1000 * t) in (200, 100, 50, 0):
                checkpoints[name, round(1000 * t)] = (x.mean(0), torch.cov(x.T))
        return callback

    reverse_sde(model, x_t, vp, t_start=t_start, dt=1e-3, noise=BatchNoise(4), callback=record("sde"))
    ddpm(model, x_t, DiscreteSchedule(), t_start=t_start, noise=BatchNoise(5),
         callback=record("ddpm"))
    for level in (200, 100, 50, 0):
        (m_sde, c_sde), (m_ddpm, c_ddpm) = checkpoints["sde", level], checkpoints["ddpm", level]
        torch.testing.assert_close(m_ddpm, m_sde, atol=0.01, rtol=0)
        torch.testing.assert_close(c_ddpm, c_sde, atol=0.01, rtol=0.05)


def test_ddim_with_eta_1_is_ddpm_with_the_posterior_variance():
    schedule = DiscreteSchedule()
    model = GaussianEps(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64) * 0.2,
                        schedule)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = ddpm(model, x, schedule, t_start=0.1, dt=0.01, noise=PerSampleNoise.from_seeds(range(5)))
    b = ddim(model, x, schedule, t_start=0.1, dt=0.01, eta=1.0,
             noise=PerSampleNoise.from_seeds(range(5)))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_samples_are_held_until_the_grid_reaches_their_start():
    model = GaussianEps(torch.zeros(1, dtype=torch.float64), torch.eye(1, dtype=torch.float64),
                        VPSchedule())
    x = torch.ones(3, 1, dtype=torch.float64)
    starts = torch.tensor([0.1, 0.06, 0.02], dtype=torch.float64)
    states = []
    reverse_sde(model, x, VPSchedule(), t_start=0.1, dt=0.01, starts=starts,
                noise=PerSampleNoise.from_seeds([0, 1, 2]),
                callback=lambda i, t, x: states.append((t, x.clone())))
    for t, state in states:
        for i, start in enumerate(starts.tolist()):
            moved = bool(state[i] != 1.0)
            assert moved == (t < start - 1e-9), (t, i)     # moved exactly once t_k <= start


def test_reverse_sde_takes_round_steps_and_reports_them():
    seen = []
    x = torch.zeros(3, 1, dtype=torch.float64)
    model = GaussianEps(torch.zeros(1, dtype=torch.float64), torch.eye(1, dtype=torch.float64),
                        VPSchedule())
    reverse_sde(model, x, VPSchedule(), t_start=0.1, dt=0.01,
                noise=PerSampleNoise.from_seeds([0, 1, 2]), callback=lambda i, t, x: seen.append(t))
    assert len(seen) == 10 and seen[-1] == 0.0


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_discrete_samplers_refuse_the_adjoint_and_bad_options(sampler):
    x, schedule = torch.zeros(2, 1), DiscreteSchedule()
    model = GaussianEps(torch.zeros(1), torch.eye(1), schedule)
    with pytest.raises(ValueError, match="'adjoint' needs a continuous-time sampler"):
        SAMPLERS[sampler].run(model, x, schedule, t_start=0.1, noise=BatchNoise(0),
                              gradient="adjoint")
    with pytest.raises(ValueError, match="expected dt >= 1/1000"):
        SAMPLERS[sampler].run(model, x, schedule, t_start=0.1, dt=1e-4, noise=BatchNoise(0))
