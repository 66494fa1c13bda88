"""Randomness is passed in: the same seed gives the same noise and purification, however split."""
import pytest
import torch

from advpure import PurifiedClassifier
from advpure.diffusion import PerSampleNoise
from advpure.purifiers import DiffPure
from conftest import tiny_cnn, tiny_unet


def test_same_seeds_give_bitwise_identical_noise():
    x = torch.zeros(4, 1, 8, 8)
    a = PerSampleNoise.from_seeds([3, 4, 5, 6]).randn_like(x)
    b = PerSampleNoise.from_seeds([3, 4, 5, 6]).randn_like(x)
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])


def test_purified_images_do_not_depend_on_the_batch_split(digits_batch):
    x, _ = digits_batch
    purifier = DiffPure(tiny_unet(), t_star=0.1, dt=0.02)
    seeds = [11, 12, 13, 14, 15, 16]
    whole = purifier(x, PerSampleNoise.from_seeds(seeds))
    parts = [purifier(x[:1], PerSampleNoise.from_seeds(seeds[:1])),
             purifier(x[1:4], PerSampleNoise.from_seeds(seeds[1:4])),
             purifier(x[4:], PerSampleNoise.from_seeds(seeds[4:]))]
    torch.testing.assert_close(torch.cat(parts), whole, atol=1e-5, rtol=0)
    assert purifier(x, PerSampleNoise.from_seeds(seeds)).equal(whole)


def test_defense_draws_fresh_noise_each_call_and_replays_from_its_seed(digits_batch):
    x, _ = digits_batch
    purifier = DiffPure(tiny_unet(), t_star=0.2, dt=0.05)
    defense = PurifiedClassifier(purifier, tiny_cnn(), generator=torch.Generator().manual_seed(7))
    first, second = defense.purify(x), defense.purify(x)
    assert not torch.equal(first, second)
    replay = PurifiedClassifier(purifier, tiny_cnn(), generator=torch.Generator().manual_seed(7))
    assert torch.equal(replay.purify(x), first)


def test_purifier_never_turns_gradients_off(digits_batch):
    x, _ = digits_batch
    x = x.clone().requires_grad_(True)
    out = DiffPure(tiny_unet(), t_star=0.1, dt=0.05)(x, torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.abs().sum() > 0


def test_fixed_noise_replays_its_draws_and_says_when_they_run_out():
    from advpure.diffusion import FixedNoise

    draws = [torch.randn(2, 3), torch.randn(2, 3)]
    noise = FixedNoise(draws)
    x = torch.zeros(2, 3)
    assert torch.equal(noise.randn_like(x), draws[0]) and torch.equal(noise.randn_like(x), draws[1])
    with pytest.raises(RuntimeError, match="all 2 pre-drawn tensors are used"):
        noise.randn_like(x)
    with pytest.raises(ValueError, match=r"expected \(3, 3\)"):
        FixedNoise(draws).randn_like(torch.zeros(3, 3))


def test_predict_x0_inverts_add_noise_given_the_true_noise():
    from advpure.diffusion import VPSchedule, add_noise, predict_x0

    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    t = torch.tensor([0.05, 0.2, 0.5, 0.9])
    x_t = add_noise(x0, t, eps, VPSchedule())
    torch.testing.assert_close(predict_x0(lambda x, t: eps, x_t, t, VPSchedule()), x0,
                               atol=1e-4, rtol=1e-4)
