"""The adjoint method through the reverse VP-SDE with torchsde, as DiffPure does it (Prop. 3.3).

Kept for comparability with DiffPure's published numbers. Its gradient is *approximate*: the
augmented (adjoint) SDE is solved backwards on its own grid, so it matches the true gradient
only as dt → 0 (DiffPure App. B.5; ``advpure bench analytic`` measures the error).
The Brownian motion is built from the noise source on the solver grid (``GridBrownian``), so a
purified image depends only on its own noise, whatever the batch.
"""
from __future__ import annotations

import torch
import torchsde

from .model import EpsModel, score
from .noise import NoiseSource
from .schedule import VPSchedule


T_EPS = 1e-5   # DiffPure's epsilon_dt1: the end time of the torchsde solve


class GridBrownian(torchsde.BaseBrownian):
    """Brownian paths known on a fixed grid s_0 < … < s_n, built from the sampler's own noise.

    W(s_k) = Σ_{j<k} √h z_j with z_j = noise.randn_like(x), one draw per step exactly as the
    other solvers draw it, so each sample's path depends only on its own noise source. torchsde's
    fixed-step Euler solve, forward and adjoint (which asks for bm(−tb, −ta) of the reversed
    motion), only asks for increments between grid points.
    """

    def __init__(self, grid: torch.Tensor, path: torch.Tensor):
        self.grid, self.path = grid, path            # [n + 1] times, [n + 1, N, d] values

    def _at(self, t) -> torch.Tensor:
        t = float(t)
        k = int(torch.searchsorted(self.grid, torch.tensor(t, dtype=self.grid.dtype)).clamp(
            1, len(self.grid) - 1))
        k = k if abs(float(self.grid[k]) - t) < abs(float(self.grid[k - 1]) - t) else k - 1
        spacing = float(self.grid[1] - self.grid[0])
        if abs(float(self.grid[k]) - t) > 1e-3 * spacing:      # float32 times drift a little
            raise ValueError(f"GridBrownian: expected a query on the solver grid, found t={t}")
        return self.path[k]

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if return_U or return_A:
            raise ValueError("GridBrownian: expected no Lévy area queries (Euler needs none)")
        return self._at(ta) if tb is None else self._at(tb) - self._at(ta)

    def __repr__(self) -> str:
        return f"GridBrownian(steps={len(self.grid) - 1}, shape={tuple(self.path.shape[1:])})"

    dtype = property(lambda self: self.path.dtype)
    device = property(lambda self: self.path.device)
    shape = property(lambda self: tuple(self.path.shape[1:]))
    levy_area_approximation = property(lambda self: "none")

    @classmethod
    def draw(cls, noise: NoiseSource, x: torch.Tensor, span: float, steps: int) -> GridBrownian:
        """Draw the n increments √h z_k from ``noise`` (shaped like x) and sum them up."""
        h = span / steps
        increments = [h ** 0.5 * noise.randn_like(x).flatten(1) for _ in range(steps)]
        path = torch.cumsum(torch.stack([torch.zeros_like(increments[0])] + increments), dim=0)
        grid = torch.linspace(0.0, span, steps + 1, dtype=torch.float64)
        return cls(grid, path.detach())


class ReverseVPSDE(torch.nn.Module):
    """The reverse VP-SDE in torchsde's forward time s = t_start − t, on flattened states.

    drift f(s, y) = β(t)(½ y + s_θ(y, t)), diffusion g(s, y) = √β(t) (diagonal, Itô);
    with ``ode=True`` the probability-flow ODE: f = ½β(t)(y + s_θ(y, t)), g = 0 (Eq. 28).
    With per-sample ``starts`` (randomized t*), f = g = 0 for a sample until t ≤ starts[i].
    ``context``: extra inputs of a guided eps-model, ``model(x, t, *context)``.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, model: EpsModel, schedule: VPSchedule, shape: torch.Size, t_start: float,
                 ode: bool = False, starts: torch.Tensor | None = None,
                 context: tuple[torch.Tensor, ...] = ()):
        super().__init__()
        self.model, self.schedule, self.shape, self.t_start = model, schedule, shape, t_start
        self.context = context
        self.score_weight = 0.5 if ode else 1.0    # the probability-flow ODE halves the score
        self.ode = ode                             # and has no diffusion (Eq. 28)
        self.starts = starts

    def _active(self, t: float, y: torch.Tensor) -> torch.Tensor | float:
        if self.starts is None:
            return 1.0
        return (self.starts.to(y.device) >= t - 1e-6).to(y.dtype)[:, None]

    def f(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = y.view(self.shape)
        t = (self.t_start - s).to(y.dtype).expand(self.shape[0])
        beta = self.schedule.beta(t).to(y.dtype)[:, None]
        s_theta = score(self.model, x, t, self.schedule, *self.context).flatten(1)
        return self._active(float(t[0]), y) * beta * (0.5 * y + self.score_weight * s_theta)

    def g(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = float(self.t_start - s)
        scale = 0.0 if self.ode else float(self.schedule.beta(t)) ** 0.5
        return self._active(t, y) * torch.full_like(y, scale)


def solve_adjoint(sde: torch.nn.Module, x: torch.Tensor, span: float, dt: float,
                  noise: NoiseSource, params: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
    """Euler–Maruyama over s ∈ [0, span] in torchsde with gradients by the adjoint SDE.

    ``params`` are the tensors the drift reads besides the state whose gradients are wanted
    (torchsde's ``adjoint_params``); the network weights are not differentiated.
    """
    steps = max(1, round(span / dt))
    y0 = x.flatten(1)
    bm = GridBrownian.draw(noise, x, span, steps)
    ts = torch.tensor([0.0, span], dtype=y0.dtype, device=y0.device)
    # a hair above span/n, so that float accumulation cannot leave a vanishing (n+1)-th step
    step = span / steps * (1.0 + 1e-9)
    ys = torchsde.sdeint_adjoint(sde, y0, ts, bm=bm, method="euler", adjoint_method="euler",
                                 dt=step, adjoint_params=params)
    return ys[-1].view(x.shape)


def reverse_sde_adjoint(model: EpsModel, x: torch.Tensor, schedule: VPSchedule, *,
                        t_start: float, t_end: float, dt: float, noise: NoiseSource,
                        ode: bool = False, starts: torch.Tensor | None = None,
                        context: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
    """x(t_end) from x(t_start) by Euler–Maruyama in torchsde, gradients by the adjoint SDE.

    Like DiffPure, the solve stops at t = T_EPS = 1e-5 rather than 0: the adjoint SDE evaluates
    the drift at the end time, where σ(0) = 0 would divide the score by zero.
    """
    sde = ReverseVPSDE(model, schedule, x.shape, t_start, ode=ode, starts=starts, context=context)
    params = tuple(c for c in context if c.is_floating_point())    # labels are not differentiated
    return solve_adjoint(sde, x, t_start - max(t_end, T_EPS), dt, noise, params)
