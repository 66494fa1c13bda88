"""The attacks that broke diffusion purification (DiffAttack, DiffHammer, DiffBreak's LF) and
N-evaluation: threat models, the undefended classifier, closed forms, by-hand counts."""
import pytest
import torch

from advpure.attacks import (
    ATTACKS,
    DiffAttackSettings,
    DiffHammerSettings,
    LowFrequencySettings,
    diffattack,
    diffhammer,
    low_frequency,
    pgd,
    selective_weights,
)
from advpure.attacks.diffattack import DeviationProbe, deviated_loss
from advpure.defense import PurifiedClassifier
from advpure.diffusion import VPSchedule
from advpure.evaluation import EvalConfig
from advpure.evaluation.protocols import protocol_attacks
from advpure.evaluation.results import EvalResult
from advpure.evaluation.store import Outcome
from advpure.metrics import ssim
from advpure.purifiers import DiffPure
from conftest import PixelGaussianEps, tiny_cnn, tiny_unet

BREAKERS = {"diffattack": diffattack, "diffhammer": diffhammer, "lf": low_frequency}


def defended(gradient: str = "exact", seed: int = 0, model=None) -> PurifiedClassifier:
    purifier = DiffPure(model or tiny_unet(), t_star=0.1, dt=0.02)
    return PurifiedClassifier(purifier, tiny_cnn(), torch.Generator().manual_seed(seed),
                              gradient=gradient)


@pytest.mark.parametrize("name", sorted(BREAKERS))
@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_every_breaker_stays_in_its_ball_and_in_the_image_range(digits_batch, name, norm, eps):
    x, y = digits_batch
    x, y = x[:3], y[:3]
    x_adv = BREAKERS[name](defended(), x, y, eps=eps, norm=norm, steps=2, eot=2,
                           generator=torch.Generator().manual_seed(1))
    assert x_adv.shape == x.shape and 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    delta = (x_adv - x).flatten(1)
    size = delta.abs().max(dim=1).values if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-6


@pytest.mark.parametrize("name", sorted(BREAKERS))
def test_every_breaker_reaches_about_zero_on_the_undefended_classifier(name):
    from advpure import data
    from advpure.models import load_classifier

    classifier = load_classifier("builtin:digits-cnn")
    x, y = data.load("digits", "test", indices=torch.arange(32))
    x_adv = BREAKERS[name](classifier, x, y, eps=0.2, steps=20, eot=1,
                           generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        accuracy = float((classifier(x_adv).argmax(1) == y).float().mean())
    assert float((classifier(x).argmax(1) == y).float().mean()) >= 0.9
    assert accuracy <= 0.05


def test_deviated_reconstruction_loss_equals_the_closed_form_on_gaussian_data():
    """With the same noise on both trajectories the noise cancels in Δ = x_t(x') − x_t(x), and
    for Gaussian data every Euler–Maruyama step is affine: Δ ← (1 + hβ(½ − 1/(ᾱs² + σ²)))Δ,
    Δ(t*) = √ᾱ(t*)·2(x' − x). The loss is the mean over the recorded steps of ‖Δ‖²/d."""
    schedule = VPSchedule()
    eps_model = PixelGaussianEps(mu=0.1, var=0.25, schedule=schedule)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    x_adv = (x + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    purifier = DiffPure(eps_model, t_star=0.1, dt=0.01)
    for every in (1, 3):
        probe = DeviationProbe(PurifiedClassifier(purifier, tiny_cnn(torch.float64),
                                                  torch.Generator().manual_seed(5)), x, every)
        _, deviation = probe(x_adv)
        delta = float(schedule.alpha_bar(0.1)) ** 0.5 * 2 * (x_adv - x)
        times = torch.linspace(0.1, 0.0, 11, dtype=torch.float64)
        recorded = []
        for i in range(10):
            t, h = float(times[i]), float(times[i] - times[i + 1])
            a = float(schedule.alpha_bar(t))
            delta = delta * (1 + h * float(schedule.beta(t)) * (0.5 - 1 / (a * 0.25 + 1 - a)))
            if (i + 1) % every == 0:
                recorded.append(delta.pow(2).flatten(1).mean(dim=1))
        torch.testing.assert_close(deviation, torch.stack(recorded).mean(0), rtol=1e-6,
                                   atol=1e-12)


def test_diffattack_loss_adds_the_weighted_deviation_and_needs_state_gradients(digits_batch):
    logits, labels = torch.randn(3, 10), torch.tensor([1, 2, 3])
    deviation = torch.tensor([0.5, 1.0, 2.0])
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    torch.testing.assert_close(deviated_loss(2.0)((logits, deviation), labels), ce + 2 * deviation)
    torch.testing.assert_close(deviated_loss(2.0)(logits, labels), ce)
    x, _ = digits_batch
    with pytest.raises(ValueError, match="gradient 'bpda' does not"):
        DeviationProbe(defended("bpda"), x[:2])


def test_diffattack_with_weight_zero_is_pgd_with_eot(digits_batch):
    x, y = digits_batch
    x, y = x[:3], y[:3]
    kw = dict(eps=0.1, steps=2, eot=2)
    ours = diffattack(defended(seed=4), x, y, weight=0.0, generator=torch.Generator().manual_seed(1),
                      **kw)
    # the attacked rows are purified with the seeds PGD's defense draws (the clean rows reuse
    # them), so with λ = 0 every step is PGD's
    theirs = pgd(defended(seed=4), x, y, generator=torch.Generator().manual_seed(1), loss="cw",
                 **kw)
    torch.testing.assert_close(ours, theirs)


def test_diffhammer_with_uniform_weights_is_pgd_with_eot(digits_batch):
    x, y = digits_batch
    x, y = x[:3], y[:3]
    kw = dict(eps=0.1, steps=3, eot=3, step_size=0.03)
    hammer = diffhammer(defended(seed=2), x, y, em_iters=0, gradient="full", keep_best=False,
                        generator=torch.Generator().manual_seed(1), **kw)
    plain = pgd(defended(seed=2), x, y, generator=torch.Generator().manual_seed(1), **kw)
    torch.testing.assert_close(hammer, plain)


def test_selective_weights_are_uniform_without_em_and_concentrate_on_the_shared_direction():
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(4, 2, 1, 8, 8, generator=g)
    for weights in (selective_weights(grads, em_iters=0), selective_weights(grads, 3, 0.0)):
        torch.testing.assert_close(weights, torch.full((4, 2), 0.25))
    shared = torch.randn(1, 1, 8, 8, generator=g)
    draws = torch.stack([shared, 1.1 * shared, 0.9 * shared, -shared])[:, None]   # 3 agree
    weights = selective_weights(draws, em_iters=3, concentration=5.0)[:, 0]
    assert torch.allclose(weights.sum(), torch.tensor(1.0))
    assert float(weights[3]) < 1e-3 and float(weights[:3].min()) > 0.3


def test_diffhammer_grafting_equals_full_for_one_draw(digits_batch):
    """With K = 1 the grafted gradient is the full one: the classifier's gradient at the
    purified image pulled back through that same purification (its noise replayed)."""
    x, y = digits_batch
    x, y = x[:2], y[:2]
    kw = dict(eps=0.1, steps=2, eot=1, step_size=0.03, keep_best=False)
    full = diffhammer(defended(seed=6), x, y, gradient="full",
                      generator=torch.Generator().manual_seed(2), **kw)
    grafted = diffhammer(defended(seed=6), x, y, gradient="grafting",
                         generator=torch.Generator().manual_seed(2), **kw)
    torch.testing.assert_close(grafted, full)


def test_n_evaluation_on_fixed_records_equals_a_count_by_hand():
    cfg = EvalConfig(n=4, seeds=(0,), draws=3)
    predictions = {0: (1, 1, 1), 1: (1, 2, 1), 2: (3, 3, 2), 3: (2, 2, 2)}
    labels = {0: 1, 1: 1, 2: 2, 3: 2}
    outcomes = [Outcome(0, key, i, labels[i], predictions[i] if key == "pgd" else (labels[i],) * 3,
                        0.5) for key in ("clean", "pgd") for i in range(4)]
    result = EvalResult(cfg, [0, 1, 2, 3], ["pgd"], outcomes)
    # by hand: all three draws right for images 0 and 3; a strict majority for 0, 1, 3;
    # single draw: (3 + 2 + 1 + 3) / 12
    assert result.accuracy("pgd", "all_draws")["mean"] == 2 / 4
    assert result.accuracy("pgd", "vote")["mean"] == 3 / 4
    assert result.accuracy("pgd", "single_draw")["mean"] == 9 / 12
    summary = result.summary()
    assert summary["accuracies"]["robust"]["all_draws"]["accuracy"] == 0.5
    assert summary["attack_seconds"] == {"clean": 2.0, "pgd": 2.0}


def test_the_breakers_are_registered_with_flags_protocol_and_keys():
    for settings in (DiffAttackSettings, DiffHammerSettings, LowFrequencySettings):
        assert ATTACKS[settings.registry_name()] is settings
    keys = [a.key() for a in protocol_attacks("breakers", "digits")]
    assert [k.split("-")[0] for k in keys] == ["pgd", "apgd", "autoattack", "diffattack",
                                               "diffhammer", "lf"]
    capped = [a.capped({"steps": 5, "eot": 2}) for a in protocol_attacks("breakers", "digits")]
    assert all(a.budgets()["steps"] == 5 and a.eot_copies() == 2 for a in capped)
    assert DiffHammerSettings(em_iters=0).key().endswith("EM 0, grafting)")


def test_ssim_is_one_for_equal_images_and_falls_with_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert float(ssim(x, noisy).max()) < 0.9
    with pytest.raises(ValueError, match="one shape"):
        ssim(x, x[:1])


def test_the_strongest_attack_and_its_paired_sign_tests_by_hand():
    from advpure.evaluation.stats import paired_sign_test
    from advpure.reports.table import strongest_attack, with_holm

    per_image = {"a": [1, 0, 0, 0, 0, 1], "b": [1, 1, 1, 1, 1, 1], "c": [1, 0, 1, 0, 0, 1]}
    summary = {"per_image": per_image, "accuracies": {
        k: {"single_draw": {"mean": sum(v) / 6}} for k, v in per_image.items()}}
    entry = strongest_attack("d", summary, ["a", "b", "c"])
    assert entry["strongest"] == "a" and entry["accuracy"] == pytest.approx(2 / 6)
    # a < b on 4 images and never above: two-sided p = 2·½⁴ = 1/8; a < c on one image: 1
    assert entry["others"]["b"]["p_value"] == pytest.approx(1 / 8)
    assert entry["others"]["c"]["p_value"] == pytest.approx(1.0)
    assert entry["others"]["b"]["points"] == pytest.approx(100 * 4 / 6)
    # the Clopper–Pearson interval of the share 4/4: [(α/2)^(1/4), 1]
    assert entry["others"]["b"]["share_low"] == pytest.approx(0.025 ** 0.25)
    assert entry["others"]["b"]["share_high"] == 1.0
    # Holm over the table: p-values 1/8 and 1 → 2·1/8 = 1/4 and max(1/4, 1) = 1
    with_holm([entry])
    assert entry["others"]["b"]["p_holm"] == pytest.approx(0.25)
    assert entry["others"]["c"]["p_holm"] == 1.0
    assert paired_sign_test([0.5, 0.5], [0.5, 0.5])["p_value"] == 1.0
