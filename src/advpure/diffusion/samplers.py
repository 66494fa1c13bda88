"""Samplers as short free functions ``(model, x, schedule, *, noise, gradient, callback)``.

A sampler is a step function ``step(x, t, t_next, z) -> x_next`` on a time grid; ``run_steps``
drives any step function under the solver-level gradient modes (DESIGN.md §4):

- ``exact``: autograd through every step;
- ``checkpoint``: each step runs without a graph and is recomputed in backward from its saved
  input state and noise (``RecomputedStep``), so only the per-step states and noises are kept,
  and the gradient is the ``exact`` one. Inside ``graph_budget(bytes)`` (``budget.py``) each
  step keeps its whole graph, a selective graph (``selective.py``) or its input only, as
  the budget holds, at the least recomputation.

``adjoint`` exists only for samplers with a continuous-time form (see ``adjoint.py``).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .._checks import check_choice
from .budget import GraphBudget, current_budget, graph_bytes
from .model import EpsModel, score
from .noise import NoiseSource
from .schedule import VPSchedule
from .selective import saved_tensors

Callback = Callable[[int, float, torch.Tensor], None]
Step = Callable[..., torch.Tensor]      # step(x, t, t_next, z, *context) -> x_next
SOLVER_GRADIENTS = ("exact", "checkpoint", "adjoint")


GRIDS = ("uniform", "authors-code")


def time_grid(t_start: float, t_end: float, dt: float, grid: str = "uniform",
              solver: str = "torchsde") -> torch.Tensor:
    """Times t_start = t_0 > t_1 > … > t_n = t_end: ``uniform``, n = round((t_start − t_end)/dt)
    equal steps; ``authors-code``, the grid of the fixed-step solver DiffPure's code calls
    (``solver``: torchsde for its SDEs, torchdiffeq for its ODE): steps of dt from t_start and a
    shorter last one, on float32 times."""
    if not t_start > t_end >= 0.0:
        raise ValueError(f"time_grid: expected t_start > t_end >= 0, found {t_start}, {t_end}")
    if not dt > 0:
        raise ValueError(f"time_grid: expected dt > 0, found {dt}")
    check_choice(grid, GRIDS, "grid")
    if grid == "authors-code":
        if solver == "torchdiffeq":
            return -torchdiffeq_times(-t_start, -t_end, dt)
        return 1.0 - torchsde_times(1.0 - t_start, 1.0 - t_end, dt)
    n = max(1, round((t_start - t_end) / dt))
    return torch.linspace(t_start, t_end, n + 1, dtype=torch.float64)


def torchsde_times(s_start: float, s_end: float, dt: float) -> torch.Tensor:
    """torchsde's fixed-step times (``BaseSDESolver.integrate``): s_{k+1} = min(s_k + dt, s_end)
    accumulated in float32 from float32(s_start), returned as float64. DiffPure's code integrates
    its reverse SDE in s = 1 − t from 1 − t* to 1 − 1e-5 (runners/diffpure_sde.py 214-218): 99
    steps of 1e-3 and a last one of 0.00099 for t* = 0.1."""
    s = torch.tensor(s_start, dtype=torch.float32)
    end = torch.tensor(s_end, dtype=torch.float32)
    times = [s]
    while bool(s < end):
        s = torch.minimum(s + dt, end)
        times.append(s)
    return torch.stack(times).double()


def torchdiffeq_times(start: float, end: float, step: float) -> torch.Tensor:
    """torchdiffeq's fixed grid (``_grid_constructor_from_step_size``) on ascending float32
    times: start + k·step for k < ⌈(end − start)/step + 1⌉, the last replaced by end; float64."""
    start32, end32 = (torch.tensor(v, dtype=torch.float32) for v in (start, end))
    count = int(torch.ceil((end32 - start32) / step + 1).item())
    times = torch.arange(0, count, dtype=torch.float32) * step + start32
    times[-1] = end32
    return times.double()


class RecomputedStep(torch.autograd.Function):
    """x_next = step(x, t, t_next, z, *context), run without a graph; backward recomputes it.

    Saves only (x, z, *context). The backward pass re-runs the step with gradients on and
    returns the vector–Jacobian products w.r.t. the state x and the context tensors (inputs the
    step reads at every step, such as LD-SDE's attacked image; autograd sums their per-step
    gradients). The noise z is data, and the networks inside a step are taken as fixed (weights
    are not differentiated in this mode). Unlike ``torch.utils.checkpoint`` it records one graph
    node per step, so memory stays flat, and it works under ``torch.autograd.grad``.
    """

    @staticmethod
    def forward(ctx, step: Step, t: float, t_next: float, x: torch.Tensor, z: torch.Tensor,
                *context: torch.Tensor) -> torch.Tensor:
        ctx.step, ctx.t, ctx.t_next = step, t, t_next
        ctx.save_for_backward(x, z, *context)
        with torch.no_grad():
            return step(x, t, t_next, z, *context)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, z, *context = ctx.saved_tensors
        wanted = [ctx.needs_input_grad[3]] + list(ctx.needs_input_grad[5:])
        with torch.enable_grad():
            inputs = [v.detach().requires_grad_(w) for v, w in zip([x, *context], wanted)]
            out = ctx.step(inputs[0], ctx.t, ctx.t_next, z, *inputs[1:])
            differentiable = [v for v, w in zip(inputs, wanted) if w]
            grads = iter(torch.autograd.grad(out, differentiable, grad_out, allow_unused=True))
        grad_x, *grad_context = [next(grads) if w else None for w in wanted]
        return (None, None, None, grad_x, None, *grad_context)


def hold_until_start(step: Step, starts: torch.Tensor) -> Step:
    """``step`` for the samples whose own start time the grid has reached (t ≤ start); the
    others are held at their state (randomized t*, DiffPure App. C.4)."""
    def held(x: torch.Tensor, t: float, t_next: float, z: torch.Tensor, *context) -> torch.Tensor:
        active = (starts >= t - 1e-9).to(x.device).reshape(-1, *([1] * (x.dim() - 1)))
        return torch.where(active, step(x, t, t_next, z, *context), x)
    return held


def run_steps(step: Step, x: torch.Tensor, times: torch.Tensor, noise: NoiseSource, *,
              gradient: str = "exact", callback: Callback | None = None,
              starts: torch.Tensor | None = None,
              context: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
    """Apply ``step`` along ``times`` with one noise draw per step, under ``gradient``.

    ``starts`` (per-sample times ≤ times[0]) holds each sample until the grid reaches its own
    start; every sample still takes one noise draw per grid step, so its result depends only
    on its own noise source. ``context`` tensors are passed to every step and differentiated.
    """
    if gradient not in ("exact", "checkpoint"):
        raise ValueError(f"run_steps: expected gradient 'exact' or 'checkpoint', found {gradient!r}")
    if starts is not None:
        step = hold_until_start(step, starts.to(device=x.device, dtype=torch.float64))
    needs_graph = x.requires_grad or any(c.requires_grad for c in context)
    recompute = gradient == "checkpoint" and torch.is_grad_enabled() and needs_graph
    budget = current_budget() if recompute else None
    n = len(times) - 1
    for i in range(n):
        t, t_next, z = float(times[i]), float(times[i + 1]), noise.randn_like(x)
        if budget is not None:
            x = budgeted_step(budget, n - i, step, x, t, t_next, z, context)
        elif recompute:
            x = RecomputedStep.apply(step, t, t_next, x, z, *context)
        else:
            x = step(x, t, t_next, z, *context)
        if callback is not None:
            callback(i, t_next, x)
    return x


def budgeted_step(budget: GraphBudget, steps_left: int, step: Step, x: torch.Tensor, t: float,
                  t_next: float, z: torch.Tensor, context: tuple[torch.Tensor, ...]
                  ) -> torch.Tensor:
    """One step under the policy ``budget`` chooses for it, measuring the policy's bytes the
    first time it runs (``budget.py``)."""
    policy = budget.choose(steps_left)
    if policy == "input":
        budget.keep(policy, 0)
        return RecomputedStep.apply(step, t, t_next, x, z, *context)
    selective = policy == "selective"
    if policy not in budget.step_bytes:
        x_next, budget.step_bytes[policy] = graph_bytes(
            lambda: step(x, t, t_next, z, *context), x.device, selective)
    elif selective:
        with saved_tensors(selective=True):
            x_next = step(x, t, t_next, z, *context)
    else:
        x_next = step(x, t, t_next, z, *context)
    budget.keep(policy, budget.step_bytes[policy])
    return x_next


def reverse_sde_step(model: EpsModel, schedule: VPSchedule) -> Step:
    """One Euler–Maruyama step of the reverse VP-SDE (DiffPure Eqs. 4–5) from t to t_next < t.

    dx = [−½β(t)x − β(t)∇log p_t(x)] dt + √β(t) dw̄, run backwards with h = t − t_next:

        x ← x + β(t) (½ x + s_θ(x, t)) h + √(β(t) h) z
    """
    def step(x: torch.Tensor, t: float, t_next: float, z: torch.Tensor,
             *context: torch.Tensor) -> torch.Tensor:
        h, beta = t - t_next, float(schedule.beta(t))
        t_vec = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
        drift = beta * (0.5 * x + score(model, x, t_vec, schedule, *context))   # −f_rev, Eq. 5
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
                         callback: Callback | None = None,
                         starts: torch.Tensor | None = None, grid: str = "uniform"
                         ) -> torch.Tensor:
    """Integrate the VP-ODE (Eq. 28) from t_start to t_end with Euler steps of ≈ dt on
    ``grid`` (``time_grid``; ``authors-code``: torchdiffeq's, as DiffPure's ODE runner).

    Draws no noise (``noise`` is accepted for a uniform signature and left untouched);
    ``gradient='adjoint'`` solves with torchsde's adjoint at zero diffusion. ``starts``: see
    ``reverse_sde``.
    """
    if gradient == "adjoint":
        from .adjoint import reverse_sde_adjoint

        return reverse_sde_adjoint(model, x, schedule, t_start=t_start, t_end=t_end, dt=dt,
                                   noise=NoNoise(), ode=True, starts=starts)
    times = time_grid(t_start, t_end, dt, grid, solver="torchdiffeq")
    return run_steps(probability_flow_step(model, schedule), x, times,
                     NoNoise(), gradient=gradient, callback=callback, starts=starts)


def reverse_sde(model: EpsModel, x: torch.Tensor, schedule: VPSchedule, *, t_start: float,
                t_end: float = 0.0, dt: float, noise: NoiseSource, gradient: str = "exact",
                callback: Callback | None = None, starts: torch.Tensor | None = None,
                context: tuple[torch.Tensor, ...] = (), grid: str = "uniform") -> torch.Tensor:
    """Integrate the reverse VP-SDE from t_start to t_end with step ≈ dt (DiffPure Eq. 4) on
    ``grid`` (``time_grid``; ``authors-code``: torchsde's, as DiffPure's code).

    Noise is added at every step, the last one included, as DiffPure's sdeint does.
    ``gradient='adjoint'`` solves with torchsde's ``sdeint_adjoint`` instead (approximate).
    ``starts``: optional per-sample start times ≤ t_start (randomized t*): sample i is held at
    its state until the grid reaches starts[i], and joins there. ``context``: extra inputs of a
    guided eps-model, ``model(x, t, *context)``, differentiated like the state.
    """
    if gradient == "adjoint":
        from .adjoint import reverse_sde_adjoint

        return reverse_sde_adjoint(model, x, schedule, t_start=t_start, t_end=t_end, dt=dt,
                                   noise=noise, starts=starts, context=context)
    return run_steps(reverse_sde_step(model, schedule), x, time_grid(t_start, t_end, dt, grid),
                     noise, gradient=gradient, callback=callback, starts=starts, context=context)
