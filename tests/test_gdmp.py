"""GDMP: DDPM purification guided toward the input (Wang et al. 2022), its scale schedule and
its attack gradients."""
import json

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from advpure.cli import app
from advpure.diffusion import DiscreteSchedule, PerSampleNoise
from advpure.diffusion.ddpm import ddpm_step
from advpure.evaluation import DefenseConfig
from advpure.metrics import ssim
from advpure.purifiers import GDMP, PURIFIERS, DiffPure, GDMPSettings
from advpure.purifiers.gdmp import guidance_scale_at
from conftest import check_second_order_gradient, gradient_at, tiny_unet, weighted_output_loss


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_scale_zero_is_ddpm_purification(digits_batch, variance):
    x, _ = digits_batch
    model, seeds = tiny_unet(), [3, 4, 5, 6, 7, 8]
    gdmp = GDMP(model, t_star=0.1, dt=0.01, guidance_scale=0.0, ddpm_variance=variance)
    plain = DiffPure(model, t_star=0.1, dt=0.01, sampler="ddpm", ddpm_variance=variance)
    torch.testing.assert_close(gdmp(x, PerSampleNoise.from_seeds(seeds)),
                               plain(x, PerSampleNoise.from_seeds(seeds)), rtol=0, atol=0)


def test_the_scale_schedule_is_the_papers():
    schedule = DiscreteSchedule()
    for t in (0.01, 0.05, 0.1):
        a = float(schedule.alpha_bar(t))
        expected = (1 - a) ** 0.5 / a ** 0.5 * 1000 / (2 * (4 / 255) / 3)
        assert guidance_scale_at(schedule, t, 1000.0, 4 / 255) == pytest.approx(expected)


@pytest.mark.parametrize("guidance", ["mse", "ssim"])
def test_the_guided_step_shifts_the_ddpm_mean_by_s_sigma_similarity_gradient(guidance):
    g = torch.Generator().manual_seed(2)
    x_t = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    x_in = 2 * torch.rand(3, 1, 8, 8, generator=g, dtype=torch.float64) - 1
    z = torch.randn(2, *x_t.shape, generator=g, dtype=torch.float64)
    model, schedule = tiny_unet(torch.float64), DiscreteSchedule()
    gdmp = GDMP(model, guidance=guidance, guidance_scale=50.0, dt=0.01)
    t, t_next = 0.05, 0.04
    steps_z = z if guidance == "mse" else z[:1]
    guided = gdmp.guided_step(schedule.grid(0.05, 0.0, 0.01))(x_t, t, t_next, steps_z, x_in)
    plain = ddpm_step(model, schedule)(x_t, t, t_next, z[0])
    a_n, a_p = float(schedule.alpha_bar(t)), float(schedule.alpha_bar(t_next))
    var = (1 - a_p) / (1 - a_n) * (1 - a_n / a_p)
    s = (1 - a_n) ** 0.5 / (a_n ** 0.5 * (2 * (4 / 255) / 3) / 50.0)
    if guidance == "mse":           # ∇ of −mean((x − x'_n)²) = −2(x − x'_n)/d, x'_n diffused
        reference = a_n ** 0.5 * x_in + (1 - a_n) ** 0.5 * z[1]
        grad = -2 * (x_t - reference) / 64
    else:                           # SSIM to the undiffused input, written out per image
        xi = x_t.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(ssim(xi, x_in).sum(), xi)
    torch.testing.assert_close(guided - plain, s * var * grad, rtol=1e-9, atol=1e-12)


def gdmp_loss(guidance: str, guidance_grad: str, gradient: str = "exact"):
    gdmp = GDMP(tiny_unet(torch.float64), t_star=0.05, dt=0.01, guidance=guidance,
                guidance_scale=30.0, guidance_grad=guidance_grad)
    return weighted_output_loss(gdmp, gradient)


def attack_gradient(guidance: str, guidance_grad: str, gradient: str = "exact") -> torch.Tensor:
    return gradient_at(*gdmp_loss(guidance, guidance_grad, gradient))


@pytest.mark.parametrize("guidance", ["mse", "ssim"])
def test_checkpoint_equals_exact_through_the_guidance(guidance):
    exact = attack_gradient(guidance, "second_order", "exact")
    checkpoint = attack_gradient(guidance, "second_order", "checkpoint")
    assert float((checkpoint - exact).norm() / exact.norm()) <= 1e-6


def test_attack_gradient_matches_float64_finite_differences():
    """(MSE guidance: the SSIM-guided map at this scale is so curved that central differences
    at h = 1e-6 still carry a 4e-6 relative truncation error, shrinking as h²)."""
    f, x = gdmp_loss("mse", "second_order")
    grads = {order: attack_gradient("mse", order) for order in ("second_order", "first_order")}
    check_second_order_gradient(f, x, grads)


def test_settings_registry_and_errors():
    assert PURIFIERS["gdmp"] is GDMPSettings
    cfg = DefenseConfig(name="gdmp", guidance="ssim", dt=0.01)
    assert cfg.describe() == "gdmp(t*=0.1, ssim a=1000, dt=0.01)"
    with pytest.raises(ValidationError, match="adjoint"):
        GDMPSettings(gradient="adjoint")
    with pytest.raises(ValidationError, match="guidance"):
        GDMPSettings(guidance="lpips")


def test_evaluate_runs_gdmp_under_diffattack(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", "--defense", "gdmp", "--dt", "0.05",
                                      "--guidance-scale", "50", "--n", "2", "--standard-n", "2",
                                      "--attack", "diffattack", "--eps", "0.2", "--steps", "1",
                                      "--draws", "2", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    assert summary["config"]["defense"]["name"] == "gdmp"
    assert set(summary["accuracies"]["robust"]) == {"single_draw", "vote", "all_draws",
                                                          "any_iterate"}
