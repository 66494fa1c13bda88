"""COUP: the guided reverse SDE from the input (COUP Eq. 5, Algorithm 1), its attack gradients,
its options, and the 1-D toy of §5.3.2."""
import json
import math

import pytest
import torch
from typer.testing import CliRunner

from advpure.cli import app
from advpure.diffusion import FixedNoise, PerSampleNoise, VPSchedule, reverse_sde
from advpure.evaluation import DefenseConfig
from advpure.guidance import ConfidenceGuidance, FromCentered, GuidedEps
from advpure.purifiers import COUP, DiffPure
from advpure.toys.coup import NoisyMixtureClassifier, closed_form_flip, flip_probabilities
from conftest import check_second_order_gradient, smooth_classifier, tiny_cnn, tiny_unet


def noise_draws(n: int, shape, seed: int = 0, dtype=torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=dtype) for _ in range(n)]


def test_without_guidance_coup_is_the_plain_reverse_sde_from_the_input(digits_batch):
    x, _ = digits_batch
    model = tiny_unet()
    draws = noise_draws(5, x.shape, dtype=torch.float32)
    coup = COUP(model, tiny_cnn(), t_star=0.1, guidance_scale=0.0, dt=0.02)
    plain = reverse_sde(model, 2 * x - 1, VPSchedule(), t_start=0.1, dt=0.02,
                        noise=FixedNoise(draws))
    torch.testing.assert_close(coup(x, FixedNoise(draws)), ((plain + 1) / 2).clamp(0, 1),
                               rtol=0, atol=0)


def test_coup_with_forward_noise_and_no_guidance_is_diffpure(digits_batch):
    x, _ = digits_batch
    model, seeds = tiny_unet(), [3, 4, 5, 6, 7, 8]
    coup = COUP(model, tiny_cnn(), guidance_scale=0.0, dt=0.02, forward_noise=True)
    diffpure = DiffPure(model, t_star=0.1, dt=0.02)
    torch.testing.assert_close(coup(x, PerSampleNoise.from_seeds(seeds)),   # t* per sample
                               diffpure(x, PerSampleNoise.from_seeds(seeds)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_the_guided_step_shifts_the_mean_by_beta_h_lambda_grad_log_confidence(scale):
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    z = torch.randn(x_t.shape, generator=g, dtype=torch.float64)
    model, classifier, schedule = tiny_unet(torch.float64), smooth_classifier(), VPSchedule()
    guided = GuidedEps(model, ConfidenceGuidance(FromCentered(classifier)), schedule, scale)
    t, h = 0.1, 0.01
    plain = reverse_sde(model, x_t, schedule, t_start=t, t_end=t - h, dt=h, noise=FixedNoise([z]))
    shifted = reverse_sde(guided, x_t, schedule, t_start=t, t_end=t - h, dt=h,
                          noise=FixedNoise([z]))
    # ∇ log max_y p̂(y | (x+1)/2), one image at a time, written out independently
    expected = []
    for image in x_t:
        xi = image[None].clone().requires_grad_(True)
        probs = torch.softmax(classifier((xi + 1) / 2), dim=1)
        (grad,) = torch.autograd.grad(torch.log(probs.max()), xi)
        expected.append(float(schedule.beta(t)) * h * scale * grad[0])
    torch.testing.assert_close(shifted - plain, torch.stack(expected), rtol=1e-10, atol=1e-12)


def coup_loss(guidance_grad: str, gradient: str = "exact"):
    g = torch.Generator().manual_seed(3)
    x = 0.3 + 0.4 * torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    weights = torch.randn(x.shape, generator=g, dtype=torch.float64)
    coup = COUP(tiny_unet(torch.float64), smooth_classifier(), t_star=0.1, guidance_scale=4.0,
                dt=0.025, guidance_grad=guidance_grad)

    def f(x):
        return (coup(x, PerSampleNoise.from_seeds([7, 8]), gradient=gradient) * weights).sum()
    return f, x


def attack_gradient(guidance_grad: str, gradient: str = "exact") -> torch.Tensor:
    f, x = coup_loss(guidance_grad, gradient)
    xg = x.clone().requires_grad_(True)
    return torch.autograd.grad(f(xg), xg)[0]


def test_second_order_attack_gradient_matches_float64_finite_differences():
    f, x = coup_loss("second_order")
    grads = {order: attack_gradient(order) for order in ("second_order", "first_order")}
    check_second_order_gradient(f, x, grads)


def test_without_guidance_the_classifier_is_never_called():
    unguided = COUP(tiny_unet(torch.float64), smooth_classifier(), guidance_scale=0.0)
    assert unguided.guided is unguided.model


@pytest.mark.parametrize("guidance_grad", ["second_order", "first_order"])
def test_checkpoint_equals_exact_for_both_guidance_gradients(guidance_grad):
    exact = attack_gradient(guidance_grad, "exact")
    checkpoint = attack_gradient(guidance_grad, "checkpoint")
    assert float((checkpoint - exact).norm() / exact.norm()) <= 1e-6


def test_guidance_runs_under_no_grad_and_leaves_no_graph(digits_batch):
    x, _ = digits_batch
    with torch.no_grad():
        out = COUP(tiny_unet(), tiny_cnn(), dt=0.05)(x, torch.Generator().manual_seed(0))
    assert not out.requires_grad and out.shape == x.shape


def test_presets_and_options():
    assert (COUP(tiny_unet(), tiny_cnn()).t_star, COUP(tiny_unet(), tiny_cnn()).guidance_scale) \
        == (0.1, 1.0)
    l2 = COUP(tiny_unet(), tiny_cnn(), preset="l2")
    assert (l2.t_star, l2.guidance_scale) == (0.075, 1.0)
    assert COUP(tiny_unet(), tiny_cnn(), t_star=0.2, preset="l2").t_star == 0.2
    with pytest.raises(ValueError, match="guidance_scale: expected greater than or equal to 0, found -1"):
        COUP(tiny_unet(), tiny_cnn(), guidance_scale=-1.0)
    with pytest.raises(ValueError, match="preset: expected 'linf' or 'l2', found 'l1'"):
        COUP(tiny_unet(), tiny_cnn(), preset="l1")
    with pytest.raises(ValueError, match="guidance_grad: expected 'second_order' or "
                                         "'first_order', found 'none'"):
        COUP(tiny_unet(), tiny_cnn(), guidance_grad="none")
    with pytest.raises(ValueError, match="t_star: expected less than or equal to 1"):
        COUP(tiny_unet(), tiny_cnn(), t_star=1.5)


@pytest.mark.parametrize("fields, message", [
    ({"name": "coup", "sampler": "ode"}, "purifier 'coup' takes no option sampler='ode'"),
    ({"name": "diffpure", "guidance_scale": 2.0}, "purifier 'diffpure' takes no option "
                                                  "guidance_scale=2.0"),
    ({"name": "coup", "t_star_delta": 0.01}, "takes no option t_star_delta=0.01"),
])
def test_config_refuses_options_of_another_purifier(fields, message):
    with pytest.raises(ValueError, match=message):
        DefenseConfig(**fields)


def test_toy_classifier_is_a_clipped_probability():
    x = torch.linspace(-6, 6, 2001, dtype=torch.float64)[:, None]
    for c in (0.0, 1.0, 50.0):
        p = torch.exp(NoisyMixtureClassifier(c)(x))
        torch.testing.assert_close(p.sum(1), torch.ones(len(x), dtype=torch.float64))
        assert float(p.min()) >= 1e-6 * (1 - 1e-12) and float(p.max()) <= 1 - 1e-6 * (1 - 1e-12)
    clean = torch.exp(NoisyMixtureClassifier(0.0)(torch.tensor([[0.0], [1.0]],
                                                                dtype=torch.float64)))[:, 1]
    expected_at_1 = 1 / (1 + math.exp(-1.0))          # N(1; .5, 1) / (N(1; −.5, 1) + N(1; .5, 1))
    torch.testing.assert_close(clean, torch.tensor([0.5, expected_at_1], dtype=torch.float64))


def test_toy_without_guidance_samples_the_exact_posterior():
    runs = 200_000
    flips = flip_probabilities(0.0, 0.0, runs=runs, dt=1e-3, seed=1)
    exact = closed_form_flip()
    standard_error = math.sqrt(exact * (1 - exact) / runs)
    assert abs(exact - 0.2757) < 1e-4                      # the issue's ≈ 0.276
    assert abs(flips["flip_final"] - exact) < 4 * standard_error, (flips, exact)
    coarse = flip_probabilities(0.0, 0.0, runs=runs, dt=1e-2, seed=2)
    assert abs(coarse["flip_final"] - exact) > abs(flips["flip_final"] - exact)  # Euler bias
    assert flips["flip_ever"] >= flips["flip_final"]


def test_toy_guidance_from_a_clean_classifier_keeps_the_label():
    unguided = flip_probabilities(0.0, 0.0, runs=20_000, dt=1e-2, seed=3)
    guided = flip_probabilities(5.0, 0.0, runs=20_000, dt=1e-2, seed=3)
    assert guided["flip_final"] < unguided["flip_final"] - 0.05


def test_toy_command_writes_table_plot_and_records(tmp_path):
    out, records = tmp_path / "toy", tmp_path / "records.json"
    result = CliRunner().invoke(app, ["toy", "coup", "--out", str(out), "--runs", "500",
                                      "--lambdas", "0,2", "--noise", "0,5", "--dt", "0.01",
                                      "--json", str(records)])
    assert result.exit_code == 0, result.output
    rows = json.loads(records.read_text())
    assert [(r["lambda"], r["c"]) for r in rows] == [(0, 0), (2, 0), (0, 5), (2, 5)]
    assert set(rows[0]) == {"lambda", "c", "runs", "flip_final", "flip_ever"}
    assert all(r["runs"] == 500 and 0 <= r["flip_final"] <= r["flip_ever"] <= 1 for r in rows)
    assert (out / "flips.png").stat().st_size > 0 and "| 5 | 2 |" in (out / "toy.md").read_text()


def test_evaluate_runs_coup_with_a_preset(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", "--defense", "coup", "--preset", "l2",
                                      "--guidance-grad", "first_order", "--dt", "0.025",
                                      "--n", "4", "--attack", "pgd", "--eps", "0.1",
                                      "--steps", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    assert summary["config"]["defense"]["preset"] == "l2"
    assert "coup(t*=0.075, λ=1, dt=0.025, first-order guidance gradient)" in result.output


def test_apgd_leaves_the_global_random_state_alone_and_stays_in_the_ball(digits_batch):
    from advpure.attacks import apgd_official as apgd

    x, y = digits_batch
    classifier = tiny_cnn()
    before = torch.random.get_rng_state()
    x_adv = apgd(classifier, x, y, eps=0.1, steps=5, seed=3)
    assert torch.equal(before, torch.random.get_rng_state())
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    torch.testing.assert_close(apgd(classifier, x, y, eps=0.1, steps=5, seed=3), x_adv)


def test_case_study_records_both_paths_for_the_bad_cases(tmp_path):
    from advpure.studies.coup_case import (CaseStudySettings, run_case_study,
                                              write_case_study)

    result = run_case_study(CaseStudySettings(n=24, steps=5, eps=0.3, dt=0.02))
    assert 0 <= result["fixed_by_guidance"] <= result["bad_cases"] <= result["clean_correct"] <= 24
    assert result["bad_cases"] > 0
    paths = result["mean_confidence"]
    assert set(paths) == {"without guidance", "with guidance"}
    for curves in paths.values():
        assert set(curves) == {"y_true", "y_adv"}
        assert all(len(v) == 6 for v in curves.values())       # the input + 5 steps of 0.02
    for label in ("y_true", "y_adv"):                           # both paths start at x_adv
        assert paths["with guidance"][label][0] == paths["without guidance"][label][0]
    # the unguided noise-free path ends on the adversarial label: that is what a bad case is
    assert paths["without guidance"]["y_adv"][-1] > paths["without guidance"]["y_true"][-1]
    report = write_case_study(result, tmp_path)
    assert "bad cases" in report and (tmp_path / "confidence.png").stat().st_size > 0
