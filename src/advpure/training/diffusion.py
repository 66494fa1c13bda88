"""Train an eps-model on the continuous VP schedule (Ho et al. 2020 objective; Song et al. 2021)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..diffusion import VPSchedule, add_noise
from ..models import SmallUNet
from .common import EMA, init_weights, minibatches


@dataclass(frozen=True)
class DiffusionTraining:
    steps: int = 20000              # optimizer steps
    batch_size: int = 128
    lr: float = 2e-3                # Adam learning rate, linearly warmed up
    warmup: int = 500               # warm-up steps
    ema_decay: float = 0.999        # the saved weights are the EMA
    t_min: float = 1e-3             # t ~ U(t_min, 1), as score_sde's sampling_eps
    base: int = 32                  # SmallUNet base width
    mults: tuple[int, ...] = (1, 2, 2)
    seed: int = 0


def eps_loss(model, x0: torch.Tensor, schedule: VPSchedule, t_min: float,
             generator: torch.Generator) -> torch.Tensor:
    """E_{t, ε} ‖eps_θ(√ᾱ x0 + σ ε, t) − ε‖² with x0 in [−1, 1] (DDPM's simple loss, continuous t)."""
    t = t_min + (1.0 - t_min) * torch.rand(x0.shape[0], generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    x_t = add_noise(x0, t, eps, schedule)
    return (model(x_t, t) - eps).square().mean()


def train_diffusion(x: torch.Tensor, cfg: DiffusionTraining, schedule: VPSchedule | None = None,
                    progress: bool = True) -> tuple[SmallUNet, dict]:
    """Train on [0, 1] images ``x`` (mapped to [−1, 1]); returns the EMA model and its config."""
    schedule = schedule or VPSchedule()
    gen = torch.Generator().manual_seed(cfg.seed)
    config = {"in_channels": x.shape[1], "base": cfg.base, "mults": list(cfg.mults)}
    model = init_weights(SmallUNet(**config), gen)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup))
    ema = EMA(model, cfg.ema_decay)
    batches = minibatches(len(x), cfg.batch_size, gen)
    bar = tqdm(range(cfg.steps), desc="train diffusion", disable=not progress)
    for step in bar:
        loss = eps_loss(model, 2.0 * x[next(batches)] - 1.0, schedule, cfg.t_min, gen)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        warmup.step()
        ema.update(model)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return ema.model, config
