"""Samplers as short free functions ``(model, x, schedule, *, noise, callback)`` (k-diffusion style)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from .model import EpsModel, score
from .noise import NoiseSource
from .schedule import VPSchedule

Callback = Callable[[int, float, torch.Tensor], None]


def time_grid(t_start: float, t_end: float, dt: float) -> torch.Tensor:
    """Times t_start = t_0 > t_1 > … > t_n = t_end with n = round((t_start − t_end) / dt) steps."""
    if not t_start > t_end >= 0.0:
        raise ValueError(f"time_grid: expected t_start > t_end >= 0, found {t_start}, {t_end}")
    if not dt > 0:
        raise ValueError(f"time_grid: expected dt > 0, found {dt}")
    n = max(1, round((t_start - t_end) / dt))
    return torch.linspace(t_start, t_end, n + 1, dtype=torch.float64)


def reverse_sde(model: EpsModel, x: torch.Tensor, schedule: VPSchedule, *, t_start: float,
                t_end: float = 0.0, dt: float, noise: NoiseSource,
                callback: Callback | None = None) -> torch.Tensor:
    """Euler–Maruyama for the reverse VP-SDE from t_start down to t_end (DiffPure Eqs. 4–5).

    The reverse SDE dx = [−½β(t)x − β(t)∇log p_t(x)] dt + √β(t) dw̄ run backwards in time gives,
    per step of size h from t to t − h,

        x ← x + β(t) (½ x + s_θ(x, t)) h + √(β(t) h) z,    z = noise.randn_like(x).

    Noise is added at every step, the last one included, as DiffPure's sdeint does.
    """
    times = time_grid(t_start, t_end, dt)
    for i in range(len(times) - 1):
        t, h = float(times[i]), float(times[i] - times[i + 1])
        t_vec = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
        beta = float(schedule.beta(t))
        drift = beta * (0.5 * x + score(model, x, t_vec, schedule))     # −f_rev of Eq. 5
        x = x + drift * h + (beta * h) ** 0.5 * noise.randn_like(x)      # Euler–Maruyama step
        if callback is not None:
            callback(i, float(times[i + 1]), x)
    return x
