"""AGDM: robust guidance (Algorithm 1, Eq. 18), its attack gradients, TRADES training of φ."""
import json

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

import advpure
from advpure.cli import app
from advpure.diffusion import DiscreteSchedule, PerSampleNoise
from advpure.diffusion.ddpm import ddpm_step
from advpure.evaluation import DefenseConfig, EvalConfig
from advpure.guidance import FromCentered
from advpure.guidance.robust import RobustGuidance, distance
from advpure.purifiers import AGDM, DiffPure
from advpure.training.guidance import GuidanceTraining, kl_divergence, train_guidance
from conftest import (check_second_order_gradient, gradient_at, smooth_classifier, tiny_cnn,
                      tiny_unet, weighted_output_loss)


@pytest.mark.parametrize("form, sampler", [("discrete", "ddpm"), ("continuous", "sde")])
def test_without_guidance_agdm_is_plain_purification(digits_batch, form, sampler):
    x, _ = digits_batch
    model, seeds = tiny_unet(), [3, 4, 5, 6, 7, 8]
    agdm = AGDM(model, tiny_cnn(), t_star=0.07, dt=0.01, form=form, guidance_scale=0.0)
    plain = DiffPure(model, t_star=0.07, dt=0.01, sampler=sampler)
    torch.testing.assert_close(agdm(x, PerSampleNoise.from_seeds(seeds)),
                               plain(x, PerSampleNoise.from_seeds(seeds)), rtol=0,
                               atol=0 if form == "discrete" else 1e-6)


@pytest.mark.parametrize("variance", ["posterior", "beta"])
@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_the_guided_ddpm_step_shifts_the_mean_by_s_sigma_gradient_terms(variance, scale):
    g = torch.Generator().manual_seed(2)
    x_t = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    x_in = torch.rand(3, 1, 8, 8, generator=g, dtype=torch.float64)
    z = torch.randn(x_t.shape, generator=g, dtype=torch.float64)
    model, phi, schedule = tiny_unet(torch.float64), smooth_classifier(seed=6), DiscreteSchedule()
    probs_ref = torch.softmax(phi(x_in), dim=1)
    label = probs_ref.argmax(1)
    guidance = RobustGuidance(FromCentered(phi))
    t, t_next = 0.05, 0.04
    plain = ddpm_step(model, schedule, variance)(x_t, t, t_next, z)
    guided = ddpm_step(model, schedule, variance, guidance, scale)(x_t, t, t_next, z, probs_ref,
                                                                   label)
    a_n, a_p = float(schedule.alpha_bar(t)), float(schedule.alpha_bar(t_next))
    beta = 1 - a_n / a_p
    var = beta if variance == "beta" else (1 - a_p) / (1 - a_n) * beta
    expected = []
    for i in range(3):      # written out independently: log p(ŷ|x) − KL(p' ‖ p(x)), one image
        xi = x_t[i:i + 1].clone().requires_grad_(True)
        p = torch.softmax(phi((xi + 1) / 2), dim=1)[0]
        kl = (probs_ref[i] * (probs_ref[i].log() - p.log())).sum()
        (grad,) = torch.autograd.grad(p[label[i]].log() - kl, xi)
        expected.append(scale * var * grad[0])
    torch.testing.assert_close(guided - plain, torch.stack(expected), rtol=1e-9, atol=1e-12)


def agdm_loss(form: str, guidance_grad: str, gradient: str = "exact"):
    agdm = AGDM(tiny_unet(torch.float64), smooth_classifier(seed=6), t_star=0.05, dt=0.01, form=form,
                guidance_scale=3.0, guidance_grad=guidance_grad)
    return weighted_output_loss(agdm, gradient)


def attack_gradient(form: str, guidance_grad: str, gradient: str = "exact") -> torch.Tensor:
    return gradient_at(*agdm_loss(form, guidance_grad, gradient))


@pytest.mark.parametrize("form", ["discrete", "continuous"])
def test_attack_gradient_matches_float64_finite_differences(form):
    f, x = agdm_loss(form, "second_order")
    grads = {order: attack_gradient(form, order) for order in ("second_order", "first_order")}
    check_second_order_gradient(f, x, grads)


@pytest.mark.parametrize("form", ["discrete", "continuous"])
def test_checkpoint_equals_exact_through_both_guidance_terms(form):
    exact = attack_gradient(form, "second_order", "exact")
    checkpoint = attack_gradient(form, "second_order", "checkpoint")
    assert float((checkpoint - exact).norm() / exact.norm()) <= 1e-6


def test_label_from_the_state_is_the_confidence_term():
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    phi = smooth_classifier(seed=6)
    probs = torch.softmax(phi((x + 1) / 2), dim=1)        # p' = p(x): the distance term vanishes
    state = RobustGuidance(FromCentered(phi), label_from="state")(x, probs, probs.argmax(1) * 0)
    from advpure.guidance import confidence_gradient
    torch.testing.assert_close(state, confidence_gradient(FromCentered(phi), x), rtol=1e-7,
                               atol=1e-10)


def test_distances_vanish_at_equal_predictions_and_are_positive_elsewhere():
    logits = torch.randn(5, 10, dtype=torch.float64)
    p, log_p = torch.softmax(logits, 1), torch.log_softmax(logits, 1)
    q_log = torch.log_softmax(logits.flip(1), 1)
    for kind in ("kl", "reverse_kl", "l2"):
        assert float(distance(kind, p, log_p).abs().max()) < 1e-12
        assert bool((distance(kind, p, q_log) > 0).all())
    torch.testing.assert_close(distance("kl", p, q_log), kl_divergence(logits, logits.flip(1)))


def test_options_and_config_errors():
    with pytest.raises(ValueError, match="guidance_distance: expected 'kl', 'reverse_kl' or 'l2'"):
        AGDM(tiny_unet(), tiny_cnn(), guidance_distance="cosine")
    with pytest.raises(ValueError, match="form: expected 'discrete' or 'continuous'"):
        AGDM(tiny_unet(), tiny_cnn(), form="hybrid")
    with pytest.raises(ValueError, match="guidance_scale: expected greater than or equal to 0"):
        AGDM(tiny_unet(), tiny_cnn(), guidance_scale=-1)
    assert AGDM(tiny_unet(), tiny_cnn()).t_star == 0.07
    with pytest.raises(ValueError, match="'adjoint' needs a continuous-time solver; agdm runs"):
        DefenseConfig(name="agdm", gradient="adjoint")
    cifar = EvalConfig(dataset="cifar10", defense=DefenseConfig(name="agdm"))
    assert cifar.defense.guidance_classifier == "builtin:cifar10-guidance"   # the dataset's φ
    with pytest.raises(ValidationError, match="no guidance model ships for svhn; give "
                                              "--guidance-classifier SPEC"):
        EvalConfig(dataset="svhn", classifier="x", defense=DefenseConfig(name="agdm",
                                                                         diffusion="y"))
    with pytest.raises(ValueError, match="purifier 'agdm' takes no option preset='l2'"):
        DefenseConfig(name="agdm", preset="l2")


def test_trades_training_lowers_its_loss():
    x, y = advpure.data.load("digits", "train")
    cfg = GuidanceTraining(steps=60, batch_size=32, eps=0.2, inner_steps=3, seed=1, width=16,
                           lr=3e-3)
    _, _, history = train_guidance(x, y, cfg, progress=False)
    losses = [h["loss"] for h in history]
    assert sum(losses[-10:]) < 0.9 * sum(losses[:10]), (losses[:10], losses[-10:])
    assert all(h["kl"] >= 0 for h in history)


def test_the_shipped_guidance_classifier_is_more_robust_than_the_standard_one():
    from advpure.training.guidance import clean_and_robust_accuracy

    x, y = advpure.data.load("digits", "test")
    robust = {}
    for spec in ("builtin:digits-cnn", "builtin:digits-guidance"):
        clean, robust[spec] = clean_and_robust_accuracy(advpure.load_classifier(spec), x, y,
                                                        eps=0.2, steps=10)
        assert clean > 0.8, (spec, clean)
    assert robust["builtin:digits-guidance"] > robust["builtin:digits-cnn"] + 0.3, robust


def test_train_guidance_command_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "phi"
    result = CliRunner().invoke(app, ["train", "guidance", "--out", str(out), "--steps", "3",
                                      "--inner-steps", "2", "--init", "builtin:digits-cnn",
                                      "--trades-lambda", "3", "--eval-steps", "2"])
    assert result.exit_code == 0, result.output
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["meta"]["training"]["trades_lambda"] == 3.0
    assert record["meta"]["init"] == "builtin:digits-cnn" and "test_accuracy" in record["meta"]
    assert advpure.load_classifier(str(out))(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_evaluate_runs_agdm(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", "--defense", "agdm", "--dt", "0.035",
                                      "--guidance-scale", "2", "--n", "4", "--attack", "pgd",
                                      "--eps", "0.1", "--steps", "1", "--out",
                                      str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "agdm(t*=0.07, s=2, dt=0.035, φ=builtin:digits-guidance)" in result.output
