"""The attack suite: threat models, strength, the official AutoAttack and our APGD, RNG hygiene."""
import pytest
import torch

from advpure import PurifiedClassifier
from advpure.attacks import apgd_eot, autoattack, dlr_loss, pgd
from advpure.attacks import apgd_official as apgd
from advpure.attacks.apgd import checkpoints
from advpure.attacks import diffusion_only, square, stadv
from advpure.attacks.stadv import flow_warp, stadv_flow
from advpure.purifiers import DiffPure
from conftest import tiny_unet

TOL = 1e-6


@pytest.fixture(scope="module")
def digits_model():
    import advpure

    x, y = advpure.data.load("digits", "test")
    return advpure.load_classifier("builtin:digits-cnn"), x[:48], y[:48]


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def in_ball(x_adv, x, eps, norm):
    delta = (x_adv - x).flatten(1)
    size = delta.abs().max(dim=1).values if norm == "linf" else delta.norm(dim=1)
    return bool((size <= eps + TOL).all() and x_adv.min() >= 0 and x_adv.max() <= 1)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.8)])
def test_every_lp_attack_stays_in_its_ball(digits_model, norm, eps):
    clf, x, y = digits_model
    x, y = x[:16], y[:16]
    outputs = {
        "pgd": pgd(clf, x, y, eps=eps, norm=norm, steps=5),
        "apgd_eot": apgd_eot(clf, x, y, eps=eps, norm=norm, steps=5, eot=2),
        "apgd": apgd(clf, x, y, eps=eps, norm=norm, steps=5),
        "autoattack": autoattack(clf, x, y, eps=eps, norm=norm, steps=3, square_queries=20),
        "autoattack rand": autoattack(clf, x, y, eps=eps, norm=norm, version="rand", steps=3,
                                      eot=2),
        "square": square(clf, x, y, eps=eps, norm=norm, queries=20),
    }
    for name, x_adv in outputs.items():
        assert in_ball(x_adv, x, eps, norm), name


def test_stadv_flow_stays_within_its_bound(digits_model):
    clf, x, y = digits_model
    flow = stadv_flow(clf, x[:8], y[:8], bound=0.05, steps=20, lr=0.1)
    assert flow.abs().max() <= 0.05 and flow.abs().max() > 0.01
    torch.testing.assert_close(stadv(clf, x[:8], y[:8], bound=0.05, steps=20, lr=0.1),
                               flow_warp(x[:8], flow).clamp(0, 1))
    torch.testing.assert_close(flow_warp(x[:8], torch.zeros(8, 2, 8, 8)), x[:8])
    assert accuracy(clf, stadv(clf, x, y, bound=0.5, steps=50), y) == 0.0


def test_large_budgets_break_the_bare_classifier_and_accuracy_falls_with_eps(digits_model):
    clf, x, y = digits_model
    for attack in (lambda e: pgd(clf, x, y, eps=e, steps=20, generator=torch.Generator().manual_seed(0)),
                   lambda e: apgd_eot(clf, x, y, eps=e, steps=20,
                                      generator=torch.Generator().manual_seed(0))):
        accs = [accuracy(clf, attack(e), y) for e in (0.02, 0.05, 0.1, 0.2, 0.5)]
        assert accs[-1] == 0.0
        assert all(b <= a + 2 / 48 for a, b in zip(accs, accs[1:])), accs   # one image slack


def test_our_apgd_is_not_weaker_than_the_official_on_a_stochastic_defense(digits_model):
    clf, x, y = digits_model
    g = torch.Generator().manual_seed(0)

    class Noisy(torch.nn.Module):               # a cheap randomized defense: Gaussian input noise
        def forward(self, images):
            noise = torch.randn(images.shape, generator=g) * 0.15
            return clf((images + noise).clamp(0, 1))

    defense = Noisy()
    draws = 8

    def robust(x_adv):
        return sum(accuracy(defense, x_adv, y) for _ in range(draws)) / draws

    ours = robust(apgd_eot(defense, x, y, eps=0.1, steps=20, eot=4))
    official = robust(apgd(defense, x, y, eps=0.1, steps=20, eot=4))
    se = (official * (1 - official) / (len(y) * draws)) ** 0.5
    assert ours <= official + 3 * se + 1e-9, (ours, official)


def test_pyautoattack_leaves_the_global_random_state_as_it_was(digits_model):
    clf, x, y = digits_model
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    autoattack(clf, x[:8], y[:8], eps=0.1, steps=2, square_queries=10, seed=5)
    autoattack(clf, x[:8], y[:8], eps=0.1, version="rand", steps=2, eot=2, seed=5)
    square(clf, x[:8], y[:8], eps=0.1, queries=10, seed=5)
    apgd(clf, x[:8], y[:8], eps=0.1, steps=2, seed=5)
    assert torch.equal(before, torch.random.get_rng_state())


def test_dlr_loss_and_apgd_checkpoints():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, -1.0]])
    y = torch.tensor([0, 0])
    torch.testing.assert_close(dlr_loss(logits, y), torch.tensor([-(3 - 1) / (3 - 0.0),
                                                                  -(0 - 2) / (2 - 0.0)]))
    assert checkpoints(100) == [22, 41, 58, 70, 80, 87, 93, 99]      # p_{j+1} = p_j + max(…)


def test_the_diffusion_only_attack_moves_the_purified_output(digits_batch):
    x, _ = digits_batch
    purifier = DiffPure(tiny_unet(), t_star=0.1, dt=0.05)
    defense = PurifiedClassifier(purifier, torch.nn.Identity(), torch.Generator().manual_seed(0))
    x_adv = diffusion_only(defense.purify, x, eps=0.2, steps=5, eot=2)
    assert in_ball(x_adv, x, 0.2, "linf")

    def distance(images):
        return float(sum(((defense.purify(images) - x) ** 2).sum() for _ in range(4)))
    with torch.no_grad():
        assert distance(x_adv) > distance(x)
