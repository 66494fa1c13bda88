"""Train AGDM's robust guidance classifier φ (AGDM Eq. 6, App. B), TRADES style.

    min_φ E[ CE(f_φ(x), y) + λ · max_{‖δ‖∞ ≤ ε} KL(softmax f_φ(x) ‖ softmax f_φ(x + δ)) ]

The inner maximisation is TRADES' (Zhang et al. 2019, Algorithm 1): start at x + 0.001·N(0, I),
``inner_steps`` signed-gradient ascent steps of size ε/4 on the KL, each projected onto the
ε-ball and [0, 1]. The classification loss sees clean images only (AGDM §3.2).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..models import SmallCNN
from .classifier import random_shift
from .common import EMA, Resume, init_weights, minibatches


@dataclass(frozen=True)
class GuidanceTraining:
    steps: int = 3000             # optimizer steps
    batch_size: int = 64
    lr: float = 1e-3              # Adam learning rate
    ema_decay: float = 0.999      # the saved weights are the EMA
    trades_lambda: float = 6.0    # λ of Eq. 6 (AGDM default)
    eps: float = 0.2              # ℓ∞ budget of the inner maximisation (CIFAR-10: 8/255)
    inner_steps: int = 10         # TRADES ascent steps
    inner_step_size: float | None = None   # default ε/4
    max_shift: int = 1            # random translation augmentation, in pixels
    seed: int = 0
    width: int = 32               # SmallCNN width (from scratch)


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(softmax p ‖ softmax q) per sample: AGDM's D between the softmax outputs."""
    log_p, log_q = F.log_softmax(logits_p, dim=1), F.log_softmax(logits_q, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def trades_adversary(model: nn.Module, x: torch.Tensor, eps: float, steps: int,
                     step_size: float, generator: torch.Generator) -> torch.Tensor:
    """argmax_{‖δ‖∞ ≤ ε} KL(f(x) ‖ f(x + δ)) by TRADES' projected sign ascent (no graph kept)."""
    with torch.no_grad():
        clean_logits = model(x)
    start = 0.001 * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    x_adv = (x + start.to(x.device)).clamp(0.0, 1.0)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = kl_divergence(clean_logits, model(x_adv)).sum()
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    return x_adv.detach()


def trades_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                trades_lambda: float) -> tuple[torch.Tensor, dict[str, float]]:
    """CE(f(x), y) + λ · mean KL(f(x) ‖ f(x_adv)) (Eq. 6), and its two parts for the log."""
    logits = model(x)
    ce = F.cross_entropy(logits, y)
    kl = kl_divergence(logits, model(x_adv)).mean()
    return ce + trades_lambda * kl, {"ce": ce.item(), "kl": kl.item()}


def train_guidance(x: torch.Tensor, y: torch.Tensor, cfg: GuidanceTraining,
                   start: tuple[nn.Module, dict] | None = None,
                   progress: bool = True, resume: str | Path | None = None,
                   resume_every: int = 200) -> tuple[nn.Module, dict, list[dict]]:
    """The EMA guidance classifier, its SmallCNN config, and the losses of every step.

    ``start``: (classifier, its config) to fine-tune, e.g. the standard classifier; default: a
    fresh SmallCNN of width ``cfg.width``. ``resume``: a file for the periodic training state
    (``Resume``), from which an interrupted run continues.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    if start is None:
        config = {"in_channels": x.shape[1], "num_classes": int(y.max()) + 1, "width": cfg.width}
        model = init_weights(SmallCNN(**config), gen)
    else:
        model, config = copy.deepcopy(start[0]).train().requires_grad_(True), start[1]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ema = EMA(model, cfg.ema_decay)
    parts = {"model": model, "ema": ema.model, "optimizer": opt}
    state = Resume(resume, resume_every, asdict(cfg) | {"images": len(y), "config": config,
                                                        "fine_tune": start is not None},
                   len(y) // cfg.batch_size)
    first, history = state.restore(parts, gen)
    batches = minibatches(len(y), cfg.batch_size, gen)
    step_size = cfg.inner_step_size or cfg.eps / 4
    bar = tqdm(range(first, cfg.steps), desc="train guidance (TRADES)", disable=not progress,
               initial=first, total=cfg.steps)
    for step in bar:
        idx = next(batches)
        xb, yb = random_shift(x[idx], cfg.max_shift, gen), y[idx]
        x_adv = trades_adversary(model, xb, cfg.eps, cfg.inner_steps, step_size, gen)
        loss, losses = trades_loss(model, xb, yb, x_adv, cfg.trades_lambda)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
        history.append({"step": step, "loss": loss.item(), **losses})
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", kl=f"{losses['kl']:.3f}")
        state.save_if_due(step + 1, parts, gen, history)
    return ema.model, config, history


def clean_and_robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                              steps: int = 20, seed: int = 0) -> tuple[float, float]:
    """Test accuracy of a bare classifier, clean and under ℓ∞ PGD-``steps`` at ε."""
    from ..attacks import pgd

    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    x_adv = pgd(model, x, y, eps=eps, norm="linf", steps=steps,
                generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    return clean, robust
