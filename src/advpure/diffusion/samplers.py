"""Samplers as short free functions ``(model, x, schedule, *, noise, gradient, callback)``.

A sampler is a step function ``step(x, t, t_next, z) -> x_next`` on a time grid; ``run_steps``
drives any step function under the solver-level gradient modes (DESIGN.md §4):

- ``exact``: autograd through every step;
- ``checkpoint``: each step runs without a graph and is recomputed in backward from its saved
  input state and noise (``RecomputedStep``), so only the per-step states and noises are kept,
  and the gradient is the ``exact`` one.

``adjoint`` exists only for samplers with a continuous-time form (see ``adjoint.py``).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .model import EpsModel, score
from .noise import NoiseSource
from .schedule import VPSchedule

Callback = Callable[[int, float, torch.Tensor], None]
Step = Callable[[torch.Tensor, float, float, torch.Tensor], torch.Tensor]
SOLVER_GRADIENTS = ("exact", "checkpoint", "adjoint")


def time_grid(t_start: float, t_end: float, dt: float) -> torch.Tensor:
    """Times t_start = t_0 > t_1 > … > t_n = t_end with n = round((t_start − t_end) / dt) steps."""
    if not t_start > t_end >= 0.0:
        raise ValueError(f"time_grid: expected t_start > t_end >= 0, found {t_start}, {t_end}")
    if not dt > 0:
        raise ValueError(f"time_grid: expected dt > 0, found {dt}")
    n = max(1, round((t_start - t_end) / dt))
    return torch.linspace(t_start, t_end, n + 1, dtype=torch.float64)


class RecomputedStep(torch.autograd.Function):
    """x_next = step(x, t, t_next, z), run without a graph; backward recomputes the step.

    Saves only (x, z). The backward pass re-runs the step with gradients on and returns the
    vector–Jacobian product w.r.t. the state x: the noise z is data, and the networks inside a
    step are taken as fixed (weights are not differentiated in this mode). Unlike
    ``torch.utils.checkpoint`` it records one graph node per step, so memory stays flat, and it
    works under ``torch.autograd.grad``.
    """

    @staticmethod
    def forward(ctx, step: Step, x: torch.Tensor, t: float, t_next: float,
                z: torch.Tensor) -> torch.Tensor:
        ctx.step, ctx.t, ctx.t_next = step, t, t_next
        ctx.save_for_backward(x, z)
        with torch.no_grad():
            return step(x, t, t_next, z)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, z = ctx.saved_tensors
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad_x,) = torch.autograd.grad(ctx.step(x, ctx.t, ctx.t_next, z), x, grad_out)
        return None, grad_x, None, None, None


def run_steps(step: Step, x: torch.Tensor, times: torch.Tensor, noise: NoiseSource, *,
              gradient: str = "exact", callback: Callback | None = None) -> torch.Tensor:
    """Apply ``step`` along ``times`` with one noise draw per step, under ``gradient``."""
    if gradient not in ("exact", "checkpoint"):
        raise ValueError(f"run_steps: expected gradient 'exact' or 'checkpoint', found {gradient!r}")
    recompute = gradient == "checkpoint" and torch.is_grad_enabled() and x.requires_grad
    for i in range(len(times) - 1):
        t, t_next, z = float(times[i]), float(times[i + 1]), noise.randn_like(x)
        if recompute:
            x = RecomputedStep.apply(step, x, t, t_next, z)
        else:
            x = step(x, t, t_next, z)
        if callback is not None:
            callback(i, t_next, x)
    return x


def reverse_sde_step(model: EpsModel, schedule: VPSchedule) -> Step:
    """One Euler–Maruyama step of the reverse VP-SDE (DiffPure Eqs. 4–5) from t to t_next < t.

    dx = [−½β(t)x − β(t)∇log p_t(x)] dt + √β(t) dw̄, run backwards with h = t − t_next:

        x ← x + β(t) (½ x + s_θ(x, t)) h + √(β(t) h) z
    """
    def step(x: torch.Tensor, t: float, t_next: float, z: torch.Tensor) -> torch.Tensor:
        h, beta = t - t_next, float(schedule.beta(t))
        t_vec = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
        drift = beta * (0.5 * x + score(model, x, t_vec, schedule))    # −f_rev of Eq. 5
        return x + drift * h + (beta * h) ** 0.5 * z                   # Euler–Maruyama
    return step


def probability_flow_step(model: EpsModel, schedule: VPSchedule) -> Step:
    """One Euler step of the VP probability-flow ODE (DiffPure App. B.4, Eq. 28) from t to t_next.

    dx = −½β(t)[x + ∇log p_t(x)] dt, run backwards with h = t − t_next:

        x ← x + ½ β(t) (x + s_θ(x, t)) h        (deterministic: the noise z is ignored)
    """
    def step(x: torch.Tensor, t: float, t_next: float, z: torch.Tensor) -> torch.Tensor:
        h, beta = t - t_next, float(schedule.beta(t))
        t_vec = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
        return x + 0.5 * beta * (x + score(model, x, t_vec, schedule)) * h
    return step


class NoNoise:
    """The noise source of deterministic samplers: zeros, drawn from nothing."""

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def probability_flow_ode(model: EpsModel, x: torch.Tensor, schedule: VPSchedule, *,
                         t_start: float, t_end: float = 0.0, dt: float,
                         noise: NoiseSource | None = None, gradient: str = "exact",
                         callback: Callback | None = None) -> torch.Tensor:
    """Integrate the VP-ODE (Eq. 28) from t_start to t_end with Euler steps of ≈ dt.

    Draws no noise (``noise`` is accepted for a uniform signature and left untouched);
    ``gradient='adjoint'`` solves with torchsde's adjoint at zero diffusion.
    """
    if gradient == "adjoint":
        from .adjoint import reverse_sde_adjoint

        return reverse_sde_adjoint(model, x, schedule, t_start=t_start, t_end=t_end, dt=dt,
                                   noise=NoNoise(), ode=True)
    return run_steps(probability_flow_step(model, schedule), x, time_grid(t_start, t_end, dt),
                     NoNoise(), gradient=gradient, callback=callback)


def reverse_sde(model: EpsModel, x: torch.Tensor, schedule: VPSchedule, *, t_start: float,
                t_end: float = 0.0, dt: float, noise: NoiseSource, gradient: str = "exact",
                callback: Callback | None = None) -> torch.Tensor:
    """Integrate the reverse VP-SDE from t_start to t_end with step ≈ dt (DiffPure Eq. 4).

    Noise is added at every step, the last one included, as DiffPure's sdeint does.
    ``gradient='adjoint'`` solves with torchsde's ``sdeint_adjoint`` instead (approximate).
    """
    if gradient == "adjoint":
        from .adjoint import reverse_sde_adjoint

        return reverse_sde_adjoint(model, x, schedule, t_start=t_start, t_end=t_end, dt=dt,
                                   noise=noise)
    return run_steps(reverse_sde_step(model, schedule), x, time_grid(t_start, t_end, dt), noise,
                     gradient=gradient, callback=callback)


# the samplers a purifier can run from t* to 0, by name
SAMPLERS = {"sde": reverse_sde, "ode": probability_flow_ode}
