"""DiffPure's sampler choice, randomized t* and the sampler options at the purifier boundary."""
import pytest
import torch

from advpure.diffusion import DiscreteSchedule, PerSampleNoise, VPSchedule
from advpure.purifiers import DiffPure
from conftest import tiny_unet


@pytest.mark.parametrize("sampler", ["sde", "ddpm"])
def test_randomized_t_star_stays_in_its_interval_and_spreads(sampler):
    purifier = DiffPure(tiny_unet(), t_star=0.1, t_star_delta=0.025, sampler=sampler)
    t = purifier.draw_t_stars(PerSampleNoise.from_seeds(range(2000)), torch.zeros(2000, 1, 8, 8))
    assert float(t.min()) >= 0.075 and float(t.max()) <= 0.125
    assert float(t.min()) < 0.077 and float(t.max()) > 0.123      # the whole interval is used
    assert abs(float(t.mean()) - 0.1) < 0.002                      # uniform: mean t̄
    if sampler == "ddpm":                                          # on levels
        torch.testing.assert_close(t, torch.round(t * 1000) / 1000)


@pytest.mark.parametrize("sampler", ["sde", "ddim"])
def test_randomized_purification_depends_only_on_each_images_seed(digits_batch, sampler):
    x, _ = digits_batch
    purifier = DiffPure(tiny_unet(), t_star=0.1, t_star_delta=0.05, dt=0.01, sampler=sampler,
                        **({"ddim_eta": 0.5} if sampler == "ddim" else {}))
    seeds = [10, 11, 12, 13, 14, 15]
    whole = purifier(x, PerSampleNoise.from_seeds(seeds))
    parts = torch.cat([purifier(x[:1], PerSampleNoise.from_seeds(seeds[:1])),
                       purifier(x[1:], PerSampleNoise.from_seeds(seeds[1:]))])
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=0)
    fixed = DiffPure(tiny_unet(), t_star=0.1, dt=0.01, sampler=sampler,
                     **({"ddim_eta": 0.5} if sampler == "ddim" else {}))
    assert not torch.allclose(whole, fixed(x, PerSampleNoise.from_seeds(seeds)))


def test_discrete_diffpure_noises_to_the_level_of_t_star():
    """t* = 0.07 is AGDM's level 70: DDIM(η=0) with one step from there is x̂0 at level 70."""
    model = tiny_unet()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    purifier = DiffPure(model, t_star=0.07, dt=0.07, sampler="ddim")
    out = purifier(x, PerSampleNoise.from_seeds([3, 4]))
    eps = PerSampleNoise.from_seeds([3, 4]).randn_like(x)
    a = float(DiscreteSchedule().alpha_bars[70])
    x_t = a ** 0.5 * (2 * x - 1) + (1 - a) ** 0.5 * eps
    x0 = (x_t - (1 - a) ** 0.5 * model(x_t, torch.full((2,), 0.07))) / a ** 0.5
    torch.testing.assert_close(out, ((x0 + 1) / 2).clamp(0, 1), atol=1e-5, rtol=0)


def test_ld_sde_starts_at_the_input_without_forward_noise():
    """With λ → 0 the LD-SDE does not move: the purified image is the input."""
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    purifier = DiffPure(tiny_unet(), sampler="ld", dt=0.1, ld_lambda=1e-12)
    torch.testing.assert_close(purifier(x, torch.Generator().manual_seed(0)), x, atol=1e-5, rtol=0)
    assert purifier.t_star is None and purifier.options["sigma2"] == 100.0


@pytest.mark.parametrize("kwargs,message", [
    (dict(sampler="sde", ddim_eta=0.5), "sampler 'sde' takes options t_end, grid, noising, found ddim_eta"),
    (dict(sampler="ddpm", ddim_eta=0.5), "found ddim_eta=0.5 \\(sampler 'ddim'\\)"),
    (dict(sampler="ld", t_star=0.1), "sampler 'ld' has no t\\*"),
    (dict(sampler="sde", t_star=0.1, t_star_delta=0.2), r"expected t_end \+ t_star_delta < t_star"),
    (dict(sampler="ddpm", schedule=VPSchedule()), "expected a DiscreteSchedule, found VPSchedule"),
    (dict(sampler="sde", schedule=DiscreteSchedule()), "expected a VPSchedule"),
])
def test_purifier_options_fail_with_clear_messages(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        DiffPure(tiny_unet(), **kwargs)


def test_ddpm_variance_option_is_checked():
    with pytest.raises(ValueError, match="ddpm_variance: expected 'posterior', 'beta' or 'learned', "
                                         "found 'large'"):
        DiffPure(tiny_unet(), sampler="ddpm", ddpm_variance="large")




@pytest.mark.parametrize("build", ["sde", "ode", "coup"])
def test_t_end_stops_the_continuous_reverse_process_there(digits_batch, build):
    """The papers integrate to t = 0; the authors' code stops at 1e-5 (``t_end``)."""
    from advpure.purifiers import COUP
    from conftest import tiny_cnn

    x, _ = digits_batch
    for t_end in (0.0, 0.02):
        purifier = COUP(tiny_unet(), tiny_cnn(), dt=0.02, t_end=t_end) if build == "coup" \
            else DiffPure(tiny_unet(), t_star=0.1, dt=0.02, sampler=build, t_end=t_end)
        times = []
        purifier(x, torch.Generator().manual_seed(0), callback=lambda i, t, x_t: times.append(t))
        assert min(float(t) for t in times) == pytest.approx(t_end)
    with pytest.raises(ValueError, match="t_end"):
        DiffPure(tiny_unet(), sampler="ddpm", t_end=1e-5)
