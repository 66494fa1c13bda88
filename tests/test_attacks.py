import pytest
import torch

import advpure
from advpure import PurifiedClassifier
from advpure.attacks import eot_loss_and_grad, pgd
from advpure.purifiers import DiffPure
from conftest import tiny_cnn, tiny_unet


def test_batched_eot_gradient_equals_mean_of_separate_gradients(digits_batch):
    x, y = digits_batch
    x = x.double()
    purifier = DiffPure(tiny_unet(torch.float64), t_star=0.1, dt=0.025)
    K = 4

    def defense():
        return PurifiedClassifier(purifier, tiny_cnn(torch.float64),
                                  generator=torch.Generator().manual_seed(5))

    _, batched = eot_loss_and_grad(defense(), x, y, eot=K)
    separate_model = defense()          # same seed: its K calls draw the batched call's seeds
    grads = [eot_loss_and_grad(separate_model, x, y, eot=1)[1] for _ in range(K)]
    torch.testing.assert_close(batched, torch.stack(grads).mean(0), atol=1e-12, rtol=1e-10)
    assert not torch.allclose(grads[0], grads[1])   # the copies really saw different noise


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_pgd_stays_in_the_eps_ball_and_in_unit_range(digits_batch, norm, eps):
    x, y = digits_batch
    x_adv = pgd(tiny_cnn(), x, y, eps=eps, norm=norm, steps=5, step_size=eps,
                generator=torch.Generator().manual_seed(0))
    delta = (x_adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_breaks_the_undefended_digits_classifier():
    x, y = advpure.data.load("digits", "test")
    x, y = x[:64], y[:64]
    clf = advpure.load_classifier("builtin:digits-cnn")
    x_adv = pgd(clf, x, y, eps=0.2, steps=10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = (clf(x).argmax(1) == y).float().mean()
        robust = (clf(x_adv).argmax(1) == y).float().mean()
    assert clean > 0.9 and robust < 0.1


def test_pgd_gradient_flows_through_the_purifier(digits_batch):
    x, y = digits_batch
    defense = PurifiedClassifier(DiffPure(tiny_unet(), t_star=0.1, dt=0.05), tiny_cnn())
    x_adv = pgd(defense, x, y, eps=0.1, steps=1, random_init=False)
    assert (x_adv - x).abs().max() == pytest.approx(0.1, abs=1e-6)
