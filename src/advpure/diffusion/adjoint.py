"""The adjoint method through the reverse VP-SDE with torchsde, as DiffPure does it (Prop. 3.3).

Kept for comparability with DiffPure's published numbers. Its gradient is *approximate*: the
augmented (adjoint) SDE is solved backwards on its own grid, so it matches the true gradient
only as dt → 0 (DiffPure App. B.5; ``advpure bench analytic`` measures the error).
The Brownian motion is one seeded ``BrownianInterval`` per sample, so a purified image depends
only on its own seed, whatever the batch.
"""
from __future__ import annotations

import torch
import torchsde

from .model import EpsModel, score
from .noise import NoiseSource
from .schedule import VPSchedule


T_EPS = 1e-5   # DiffPure's epsilon_dt1: the end time of the torchsde solve


class PerSampleBrownian(torchsde.BaseBrownian):
    """A batch of independent Brownian motions: one ``BrownianInterval`` per sample and seed."""

    def __init__(self, t0: float, t1: float, seeds: list[int], size: int,
                 dtype: torch.dtype, device: torch.device):
        self.members = [torchsde.BrownianInterval(t0=t0, t1=t1, size=(1, size), dtype=dtype,
                                                  device=device, entropy=s) for s in seeds]
        self._shape, self._dtype, self._device = (len(seeds), size), dtype, device

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        return torch.cat([m(ta, tb, return_U, return_A) for m in self.members])

    def __repr__(self) -> str:
        return f"PerSampleBrownian(batch={self._shape[0]}, size={self._shape[1]})"

    dtype = property(lambda self: self._dtype)
    device = property(lambda self: self._device)
    shape = property(lambda self: self._shape)
    levy_area_approximation = property(lambda self: "none")


class ReverseVPSDE(torch.nn.Module):
    """The reverse VP-SDE in torchsde's forward time s = t_start − t, on flattened states.

    drift f(s, y) = β(t)(½ y + s_θ(y, t)), diffusion g(s, y) = √β(t) (diagonal, Itô).
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, model: EpsModel, schedule: VPSchedule, shape: torch.Size, t_start: float):
        super().__init__()
        self.model, self.schedule, self.shape, self.t_start = model, schedule, shape, t_start

    def f(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = y.view(self.shape)
        t = (self.t_start - s).to(y.dtype).expand(self.shape[0])
        beta = self.schedule.beta(t).to(y.dtype)[:, None]
        return beta * (0.5 * y + score(self.model, x, t, self.schedule).flatten(1))

    def g(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = float(self.t_start - s)
        return torch.full_like(y, float(self.schedule.beta(t)) ** 0.5)


def per_sample_seeds(noise: NoiseSource, n: int) -> list[int]:
    if not hasattr(noise, "draw_seeds"):
        raise TypeError("adjoint: expected a noise source with per-sample generators "
                        f"(PerSampleNoise or a torch.Generator), found {type(noise).__name__}")
    seeds = noise.draw_seeds()
    if len(seeds) != n:
        raise ValueError(f"adjoint: expected {n} per-sample generators, found {len(seeds)}")
    return seeds


def reverse_sde_adjoint(model: EpsModel, x: torch.Tensor, schedule: VPSchedule, *,
                        t_start: float, t_end: float, dt: float, noise: NoiseSource,
                        adjoint: bool = True) -> torch.Tensor:
    """x(t_end) from x(t_start) by Euler–Maruyama in torchsde, gradients by the adjoint SDE.

    Like DiffPure, the solve stops at t = T_EPS = 1e-5 rather than 0: the adjoint SDE evaluates
    the drift at the end time, where σ(0) = 0 would divide the score by zero.
    ``adjoint=False`` backpropagates through torchsde's own solver steps instead (a reference
    for tests: the same path, differentiated exactly).
    """
    span = t_start - max(t_end, T_EPS)
    y0 = x.flatten(1)
    bm = PerSampleBrownian(0.0, span, per_sample_seeds(noise, x.shape[0]), y0.shape[1],
                           y0.dtype, y0.device)
    ts = torch.tensor([0.0, span], dtype=y0.dtype, device=y0.device)
    sde = ReverseVPSDE(model, schedule, x.shape, t_start)
    # a hair above span/n, so that float accumulation cannot leave a vanishing (n+1)-th step,
    # on which torchsde's BrownianInterval stalls
    step = span / max(1, round(span / dt)) * (1.0 + 1e-9)
    if adjoint:
        ys = torchsde.sdeint_adjoint(sde, y0, ts, bm=bm, method="euler", adjoint_method="euler",
                                     dt=step, adjoint_params=())
    else:
        ys = torchsde.sdeint(sde, y0, ts, bm=bm, method="euler", dt=step)
    return ys[-1].view(x.shape)
