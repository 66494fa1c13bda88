"""DDPM steps as guided-diffusion takes them (openai/guided-diffusion, gaussian_diffusion.py,
``p_mean_variance`` and ``p_sample``; respacing.py): the learned variance (Nichol & Dhariwal
2021, Eq. 15, 'learned_range') and ``clip_denoised``, against an independent float64
re-computation of the upstream formulas on a respaced grid."""
from __future__ import annotations

import math

import pytest
import torch

from advpure.diffusion import DiscreteSchedule
from advpure.diffusion.ddpm import ddpm_step
from advpure.models.adapters import DiscreteTimestepEps
from advpure.purifiers import AGDM, DiffPure, HeteroPure

from conftest import tiny_cnn, tiny_unet


def toy_net(x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """2·C outputs: a large eps (so that x̂0 leaves [−1, 1]) and variance values in (−1, 1)."""
    scale = (steps.double() / 1000 + 0.5).view(-1, 1, 1, 1)
    return torch.cat([3.0 * torch.sin(5 * x) * scale, torch.tanh(x - scale)], dim=1)


def upstream_tables(used: list[int]) -> dict[str, list[float]]:
    """guided-diffusion's respaced tables for the used 0-based timesteps (ascending)."""
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    cumprod, running = [], 1.0
    for b in betas:
        running *= 1.0 - b
        cumprod.append(running)
    last, new_betas = 1.0, []
    for i in used:                                          # SpacedDiffusion.__init__
        new_betas.append(1.0 - cumprod[i] / last)
        last = cumprod[i]
    ac = [cumprod[i] for i in used]
    ac_prev = [1.0] + ac[:-1]
    posterior = [b * (1 - p) / (1 - a) for b, p, a in zip(new_betas, ac_prev, ac)]
    return {"betas": new_betas, "ac": ac, "ac_prev": ac_prev, "posterior": posterior,
            "log_clipped": [math.log(v) for v in [posterior[1]] + posterior[1:]],
            "coef1": [b * p ** 0.5 / (1 - a) for b, p, a in zip(new_betas, ac_prev, ac)],
            "coef2": [(1 - p) * (1 - b) ** 0.5 / (1 - a)
                      for b, p, a in zip(new_betas, ac_prev, ac)]}


def upstream_step(x, k, used, tables, variance, clip, z, shift=None):
    """p_sample at respaced index k: the model at original timestep used[k]; + a mean shift
    Σ·shift (condition_mean) when given."""
    out = toy_net(x, torch.full((x.shape[0],), used[k]))
    eps, values = out[:, :1], out[:, 1:]
    ac = tables["ac"][k]
    x0 = math.sqrt(1 / ac) * x - math.sqrt(1 / ac - 1) * eps
    x0 = x0.clamp(-1, 1) if clip else x0
    mean = tables["coef1"][k] * x0 + tables["coef2"][k] * x
    if variance == "learned":
        frac = (values + 1) / 2
        log_var = frac * math.log(tables["betas"][k]) + (1 - frac) * tables["log_clipped"][k]
        var = torch.exp(log_var)
    else:
        var = torch.full_like(x, tables["posterior"][k])          # 'fixedsmall'
    if shift is not None:
        mean = mean + var * shift
    return mean + (k != 0) * var.sqrt() * z


@pytest.mark.parametrize("variance", ["learned", "posterior"])
@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_steps_equal_guided_diffusion_on_a_respaced_grid(variance, clip):
    schedule = DiscreteSchedule()
    grid = schedule.grid(0.1, 0.0, 0.02)                        # levels 100, 80, …, 20, 0
    levels = [round(1000 * float(t)) for t in grid]
    used = sorted(n - 1 for n in levels if n > 0)               # 19, 39, …, 99
    tables = upstream_tables(used)
    model = DiscreteTimestepEps(toy_net, channels=1, learned_variance=True).double()
    step = ddpm_step(model, schedule, variance, guidance=lambda x: torch.ones_like(x),
                     clip_denoised=clip, grid=grid)
    g = torch.Generator().manual_seed(0)
    for i in range(len(levels) - 1):
        k = used.index(levels[i] - 1)
        x = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
        z = torch.randn(x.shape, generator=g, dtype=torch.float64)
        ours = step(x, float(grid[i]), float(grid[i + 1]), z)
        shift = None if variance == "posterior" and k == 0 else torch.ones_like(x)
        expected = upstream_step(x, k, used, tables, variance, clip, z, shift)
        torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)
        if clip and i == 0:                                     # the clip did act
            unclipped = ddpm_step(model, schedule, variance, grid=grid)(
                x, float(grid[i]), float(grid[i + 1]), z)
            assert (unclipped - ddpm_step(model, schedule, variance, clip_denoised=True,
                                          grid=grid)(x, float(grid[i]), float(grid[i + 1]), z)
                    ).abs().max() > 1e-3


def test_the_learned_variance_is_refused_for_a_model_without_it():
    message = "'learned' needs a model with learned-variance outputs"
    with pytest.raises(ValueError, match=message):
        DiffPure(tiny_unet(), sampler="ddpm", ddpm_variance="learned")
    with pytest.raises(ValueError, match=message):
        AGDM(tiny_unet(), tiny_cnn(), ddpm_variance="learned")
    with pytest.raises(ValueError, match=message):
        HeteroPure(tiny_unet(), tiny_cnn(), ddpm_variance="learned")


def test_every_ddpm_purifier_takes_the_learned_variance_and_the_clip(digits_batch):
    x, _ = digits_batch
    model = DiscreteTimestepEps(lambda x, s: torch.cat([x, torch.zeros_like(x)], 1), channels=1,
                                learned_variance=True)
    options = dict(ddpm_variance="learned", clip_denoised=True, dt=0.05)
    for purifier in (DiffPure(model, sampler="ddpm", **options),
                     AGDM(model, tiny_cnn(), **options), HeteroPure(model, tiny_cnn(), **options)):
        out = purifier(x, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and torch.isfinite(out).all()
