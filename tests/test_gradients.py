"""Gradient modes: exact = finite differences, checkpoint = exact, adjoint → analytic, and the
approximate modes do what they say (DESIGN.md §4)."""
import pytest
import torch
from torch.nn import functional as F

from advpure import PurifiedClassifier
from advpure.diffusion import (DiscreteSchedule, PerSampleNoise, VPSchedule, ddim, ddpm,
                               langevin_sde, probability_flow_ode, reverse_sde)
from advpure.diffusion.analytic import GaussianEps, discretised_gradient, posterior_gradient
from advpure.guidance import ConfidenceGuidance, FromCentered, GuidedEps
from advpure.purifiers import DiffPure
from conftest import CountingEps, smooth_classifier, tiny_cnn, tiny_unet

STARTS = torch.tensor([0.1, 0.07, 0.04], dtype=torch.float64)   # randomized t* of 3 samples
# every sampler that exists, as (x_t, model, noise, gradient) -> x_0; new samplers join here
SAMPLERS = {
    "reverse_sde": lambda x, model, noise, gradient: reverse_sde(
        model, x, VPSchedule(), t_start=0.1, dt=0.025, noise=noise, gradient=gradient),
    "probability_flow_ode": lambda x, model, noise, gradient: probability_flow_ode(
        model, x, VPSchedule(), t_start=0.1, dt=0.025, noise=noise, gradient=gradient),
    "reverse_sde_randomized_t*": lambda x, model, noise, gradient: reverse_sde(
        model, x, VPSchedule(), t_start=0.1, dt=0.01, noise=noise, gradient=gradient,
        starts=STARTS),
    "langevin_sde": lambda x, model, noise, gradient: langevin_sde(
        model, x, VPSchedule(), dt=0.1, noise=noise, gradient=gradient, sigma2=0.5),
    "ddpm": lambda x, model, noise, gradient: ddpm(
        model, x, DiscreteSchedule(), t_start=0.1, dt=0.025, noise=noise, gradient=gradient),
    "ddim": lambda x, model, noise, gradient: ddim(
        model, x, DiscreteSchedule(), t_start=0.1, dt=0.025, noise=noise, gradient=gradient,
        eta=0.5),
    "coup_guided_sde": lambda x, model, noise, gradient: reverse_sde(
        guided(model), x, VPSchedule(), t_start=0.1, dt=0.025, noise=noise, gradient=gradient),
}
CONTINUOUS_TIME = {"reverse_sde", "probability_flow_ode", "reverse_sde_randomized_t*",
                   "langevin_sde", "coup_guided_sde"}      # samplers that have an adjoint


def guided(model):
    """The COUP score s_θ + λ∇log max p̂ (second order) with a tiny smooth classifier."""
    return GuidedEps(model, ConfidenceGuidance(FromCentered(smooth_classifier())), VPSchedule(),
                     2.0)


def sampler_gradient(sampler, gradient, x, weights):
    x = x.clone().requires_grad_(True)
    noise = PerSampleNoise.from_seeds(range(len(x)))
    out = SAMPLERS[sampler](x, tiny_unet(torch.float64), noise, gradient)
    return torch.autograd.grad((out * weights).sum(), x)[0]


@pytest.fixture
def state():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64),
            torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("gradient", ["checkpoint", "adjoint"])
def test_solver_gradient_modes(sampler, gradient, state):
    x, weights = state
    if gradient == "adjoint" and sampler not in CONTINUOUS_TIME:
        with pytest.raises(ValueError, match="adjoint"):
            sampler_gradient(sampler, gradient, x, weights)
        return
    if gradient == "adjoint":       # approximate: its convergence is tested below
        grad = sampler_gradient(sampler, gradient, x, weights)
        assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
        return
    exact = sampler_gradient(sampler, "exact", x, weights)
    other = sampler_gradient(sampler, gradient, x, weights)
    rel = float((other - exact).norm() / exact.norm())
    assert rel <= 1e-6, rel


@pytest.mark.parametrize("sampler", ["reverse_sde", "langevin_sde", "coup_guided_sde"])
def test_adjoint_converges_to_exact_on_the_same_noise_as_dt_shrinks(sampler, state):
    x, weights = state
    run = {"reverse_sde": lambda x, dt, gradient: reverse_sde(
               tiny_unet(torch.float64), x, VPSchedule(), t_start=0.1, dt=dt,
               noise=PerSampleNoise.from_seeds([1, 2, 3]), gradient=gradient),
           "coup_guided_sde": lambda x, dt, gradient: reverse_sde(
               guided(tiny_unet(torch.float64)), x, VPSchedule(), t_start=0.1, dt=dt,
               noise=PerSampleNoise.from_seeds([1, 2, 3]), gradient=gradient),
           "langevin_sde": lambda x, dt, gradient: langevin_sde(
               tiny_unet(torch.float64), x, VPSchedule(), dt=dt, sigma2=0.5, score_t=0.05,
               noise=PerSampleNoise.from_seeds([1, 2, 3]), gradient=gradient)}[sampler]
    errors = []
    for dt in (0.05, 0.01) if sampler == "langevin_sde" else (0.005, 0.001):
        grads = {}
        for gradient in ("exact", "adjoint"):
            xg = x.clone().requires_grad_(True)
            out = run(xg, dt, gradient)
            grads[gradient] = torch.autograd.grad((out * weights).sum(), xg)[0]
        errors.append(float((grads["adjoint"] - grads["exact"]).norm() / grads["exact"].norm()))
    assert errors[1] < errors[0] / 2 and errors[1] < 0.1, errors


def test_adjoint_purification_does_not_depend_on_the_batch_split(digits_batch):
    x, _ = digits_batch
    purifier = DiffPure(tiny_unet(), t_star=0.1, dt=0.02)
    seeds = [4, 5, 6, 7, 8, 9]
    whole = purifier(x, PerSampleNoise.from_seeds(seeds), gradient="adjoint")
    parts = [purifier(x[:2], PerSampleNoise.from_seeds(seeds[:2]), gradient="adjoint"),
             purifier(x[2:], PerSampleNoise.from_seeds(seeds[2:]), gradient="adjoint")]
    torch.testing.assert_close(torch.cat(parts), whole, atol=1e-5, rtol=0)


def test_exact_gradient_matches_float64_finite_differences():
    g = torch.Generator().manual_seed(3)
    x = 0.25 + 0.5 * torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    weights = torch.randn(x.shape, generator=g, dtype=torch.float64)
    purifier = DiffPure(tiny_unet(torch.float64), t_star=0.1, dt=0.025)

    def f(x):
        return (purifier(x, PerSampleNoise.from_seeds([7, 8])) * weights).sum()

    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(xg), xg)
    for _ in range(3):
        v = torch.randn(x.shape, generator=g, dtype=torch.float64)
        fd = (f(x + 1e-6 * v) - f(x - 1e-6 * v)) / 2e-6
        assert float((grad * v).sum()) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("var0", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("gradient", ["exact", "checkpoint"])
def test_exact_and_checkpoint_match_the_discretised_closed_form(var0, gradient):
    schedule, t_star, dt = VPSchedule(), 0.1, 0.01
    model = GaussianEps(torch.zeros(1, dtype=torch.float64),
                        torch.full((1, 1), var0, dtype=torch.float64), schedule)
    x = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    out = reverse_sde(model, x, schedule, t_start=t_star, dt=dt,
                      noise=PerSampleNoise.from_seeds([0]), gradient=gradient)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert float(grad) == pytest.approx(discretised_gradient(schedule, t_star, dt, var0), rel=1e-12)


@pytest.mark.parametrize("var0", [0.05, 0.5])
def test_adjoint_error_against_eq31_falls_with_the_step(var0):
    schedule, t_star = VPSchedule(), 0.1
    model = GaussianEps(torch.zeros(1, dtype=torch.float64),
                        torch.full((1, 1), var0, dtype=torch.float64), schedule)
    errors = []
    for dt in (1e-2, 1e-3):
        x = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
        out = reverse_sde(model, x, schedule, t_start=t_star, dt=dt,
                          noise=PerSampleNoise.from_seeds([0]), gradient="adjoint")
        (grad,) = torch.autograd.grad(out.sum(), x)
        exact = posterior_gradient(schedule, t_star, var0)
        errors.append(abs(float(grad) - exact) / exact)
    assert errors[1] < errors[0] / 3


@pytest.mark.parametrize("gradient,dt,tolerance", [
    ("exact", 1e-3, 1e-2), ("checkpoint", 1e-3, 1e-2), ("adjoint", 1e-3, 1e-2)])
def test_ode_gradient_approaches_its_closed_form(gradient, dt, tolerance):
    """The VP-ODE maps N(√ᾱμ0, v) to N(μ0, σ0²) affinely: ∂x(0)/∂x(t*) = √(σ0² / v(t*))."""
    schedule, t_star, var0 = VPSchedule(), 0.1, 0.1
    model = GaussianEps(torch.zeros(1, dtype=torch.float64),
                        torch.full((1, 1), var0, dtype=torch.float64), schedule)
    x = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    out = probability_flow_ode(model, x, schedule, t_start=t_star, dt=dt, gradient=gradient)
    (grad,) = torch.autograd.grad(out.sum(), x)
    a = float(schedule.alpha_bar(t_star))
    assert float(grad) == pytest.approx((var0 / (a * var0 + 1 - a)) ** 0.5, rel=tolerance)


def defense(gradient, seed=5, **kwargs):
    purifier = DiffPure(tiny_unet(torch.float64), t_star=0.1, dt=0.025)
    return PurifiedClassifier(purifier, tiny_cnn(torch.float64), gradient=gradient,
                              generator=torch.Generator().manual_seed(seed), **kwargs)


def loss_grad(model, x, y):
    x = x.clone().requires_grad_(True)
    logits = model(x)
    return logits.detach(), torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)[0]


def test_bpda_returns_the_classifier_gradient_at_the_purified_image(digits_batch):
    x, y = digits_batch
    x = x.double()
    logits, grad = loss_grad(defense("bpda"), x, y)
    purified = defense("exact").purify(x).detach()       # same seed: same purification
    ref_logits, ref_grad = loss_grad(tiny_cnn(torch.float64), purified, y)
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(grad, ref_grad)


def test_blind_returns_the_classifier_gradient_at_the_input(digits_batch):
    x, y = digits_batch
    x = x.double()
    logits, grad = loss_grad(defense("blind"), x, y)
    ref_logits, ref_grad = loss_grad(tiny_cnn(torch.float64), x, y)
    torch.testing.assert_close(logits, ref_logits)         # the attack sees the classifier
    torch.testing.assert_close(grad, ref_grad)
    with torch.no_grad():                                  # evaluation sees the defense
        torch.testing.assert_close(defense("blind")(x), defense("exact")(x))


@pytest.mark.parametrize("gradient,expected_calls", [
    ("exact", 4), ("checkpoint", 4 + 4), ("bpda", 4), ("blind", 0), ("surrogate", 4 + 1)])
def test_network_evaluations_per_forward_and_backward(digits_batch, gradient, expected_calls):
    x, y = digits_batch
    eps = CountingEps(tiny_unet())
    purifier = DiffPure(eps, t_star=0.1, dt=0.025)                  # 4 steps
    surrogate = DiffPure(eps, t_star=0.1, dt=0.1) if gradient == "surrogate" else None  # 1 step
    model = PurifiedClassifier(purifier, tiny_cnn(), gradient=gradient, surrogate=surrogate)
    loss_grad(model, x, y)
    assert eps.calls == expected_calls


def test_surrogate_gradient_is_the_cheap_purifications_gradient(digits_batch):
    x, y = digits_batch
    x = x.double()
    cheap = DiffPure(tiny_unet(torch.float64), t_star=0.1, dt=0.05)
    logits, grad = loss_grad(defense("surrogate", surrogate=cheap), x, y)
    torch.testing.assert_close(logits, defense("exact")(x).detach())
    # reference: the defense's generator gives the real purification the first per-sample
    # seeds and the surrogate the second; chain rule by hand through the surrogate
    gen = torch.Generator().manual_seed(5)
    real_noise, cheap_noise = PerSampleNoise.spawn(gen, len(x)), PerSampleNoise.spawn(gen, len(x))
    purified = defense("exact").purifier(x, real_noise).detach().requires_grad_(True)
    loss = F.cross_entropy(tiny_cnn(torch.float64)(purified), y, reduction="sum")
    (grad_purified,) = torch.autograd.grad(loss, purified)
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(cheap(xg, cheap_noise), xg, grad_outputs=grad_purified)
    torch.testing.assert_close(grad, ref)


def test_gradient_mode_errors():
    with pytest.raises(ValueError, match="gradient: expected one of exact, checkpoint, adjoint"):
        defense("magic")
    with pytest.raises(ValueError, match="expected a surrogate purifier exactly when"):
        defense("surrogate")
