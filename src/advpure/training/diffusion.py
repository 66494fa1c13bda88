"""Train an eps-model on the continuous VP schedule (Ho et al. 2020 objective; Song et al. 2021)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..diffusion import VPSchedule, add_noise
from ..models import SmallUNet
from .common import EMA, Resume, init_weights, minibatches


@dataclass(frozen=True)
class DiffusionTraining:
    steps: int = 20000              # optimizer steps
    batch_size: int = 128
    lr: float = 2e-3                # Adam learning rate, linearly warmed up
    warmup: int = 500               # warm-up steps
    ema_decay: float = 0.999        # the saved weights are the EMA
    t_min: float = 1e-3             # t ~ U(t_min, t_max); t_min as score_sde's sampling_eps
    t_max: float = 1.0              # < 1: only the noise levels purification visits (t ≤ t_max)
    base: int = 32                  # SmallUNet base width
    mults: tuple[int, ...] = (1, 2, 2)
    seed: int = 0


def eps_loss(model, x0: torch.Tensor, schedule: VPSchedule, t_min: float,
             generator: torch.Generator, t_max: float = 1.0) -> torch.Tensor:
    """E_{t, ε} ‖eps_θ(√ᾱ x0 + σ ε, t) − ε‖² with x0 in [−1, 1] and t ~ U(t_min, t_max) (DDPM's
    simple loss, continuous t)."""
    t = t_min + (t_max - t_min) * torch.rand(x0.shape[0], generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    x_t = add_noise(x0, t, eps, schedule)
    return (model(x_t, t) - eps).square().mean()


def train_diffusion(x: torch.Tensor, cfg: DiffusionTraining, schedule: VPSchedule | None = None,
                    progress: bool = True, resume: str | Path | None = None,
                    resume_every: int = 500) -> tuple[SmallUNet, dict]:
    """Train on [0, 1] images ``x`` (mapped to [−1, 1]); returns the EMA model and its config.

    ``resume``: a file for the periodic training state (``Resume``): an interrupted run started
    again continues from it and ends with the same weights as an uninterrupted one.
    """
    if not 0.0 <= cfg.t_min < cfg.t_max <= 1.0:
        raise ValueError(f"DiffusionTraining: expected 0 <= t_min < t_max <= 1, found "
                         f"t_min={cfg.t_min}, t_max={cfg.t_max}")
    schedule = schedule or VPSchedule()
    gen = torch.Generator().manual_seed(cfg.seed)
    config = {"in_channels": x.shape[1], "base": cfg.base, "mults": list(cfg.mults)}
    model = init_weights(SmallUNet(**config), gen)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup))
    ema = EMA(model, cfg.ema_decay)
    parts = {"model": model, "ema": ema.model, "optimizer": opt, "scheduler": warmup}
    state = Resume(resume, resume_every, asdict(cfg) | {"images": len(x)},
                   len(x) // cfg.batch_size)
    start, _ = state.restore(parts, gen)
    batches = minibatches(len(x), cfg.batch_size, gen)
    bar = tqdm(range(start, cfg.steps), desc="train diffusion", disable=not progress,
               initial=start, total=cfg.steps)
    for step in bar:
        loss = eps_loss(model, 2.0 * x[next(batches)] - 1.0, schedule, cfg.t_min, gen, cfg.t_max)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        warmup.step()
        ema.update(model)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        state.save_if_due(step + 1, parts, gen, [])
    return ema.model, config


@torch.no_grad()
def eps_mse(model, x: torch.Tensor, times: tuple[float, ...] = (0.05, 0.1, 0.2),
            schedule: VPSchedule | None = None, seed: int = 0,
            batch_size: int = 256) -> dict[float, float]:
    """Denoising quality: mean ‖eps_θ(x_t, t) − ε‖² per pixel at each fixed t on [0, 1] images
    ``x`` (one seeded noise draw per image; 1.0 = predicting zero)."""
    schedule = schedule or VPSchedule()
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(x.shape, generator=gen)
    result = {}
    for t in times:
        errors = []
        for part in torch.split(torch.arange(len(x)), batch_size):
            x_t = add_noise(2.0 * x[part] - 1.0, t, eps[part], schedule)
            t_vec = torch.full((len(part),), float(t))
            errors.append((model(x_t, t_vec) - eps[part]).square().flatten(1).mean(1))
        result[t] = float(torch.cat(errors).mean())
    return result
