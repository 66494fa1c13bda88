"""Train a classifier by cross-entropy with Adam, light shift augmentation and EMA weights."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..models import SmallCNN
from .common import EMA, init_weights, minibatches


@dataclass(frozen=True)
class ClassifierTraining:
    steps: int = 3000         # optimizer steps
    batch_size: int = 64
    lr: float = 1e-3          # Adam learning rate
    ema_decay: float = 0.999  # the saved weights are the EMA
    max_shift: int = 1        # random translation augmentation, in pixels
    seed: int = 0
    width: int = 32           # SmallCNN width


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ±max_shift pixels (zero padding)."""
    if max_shift == 0:
        return x
    padded = F.pad(x, [max_shift] * 4)
    h, w = x.shape[-2:]
    offsets = torch.randint(0, 2 * max_shift + 1, (x.shape[0], 2), generator=generator)
    return torch.stack([padded[i, :, a:a + h, b:b + w] for i, (a, b) in enumerate(offsets.tolist())])


def train_classifier(x: torch.Tensor, y: torch.Tensor, cfg: ClassifierTraining,
                     progress: bool = True) -> tuple[SmallCNN, dict]:
    """Returns the EMA model and its constructor config."""
    gen = torch.Generator().manual_seed(cfg.seed)
    config = {"in_channels": x.shape[1], "num_classes": int(y.max()) + 1, "width": cfg.width}
    model = init_weights(SmallCNN(**config), gen)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ema = EMA(model, cfg.ema_decay)
    batches = minibatches(len(y), cfg.batch_size, gen)
    bar = tqdm(range(cfg.steps), desc="train classifier", disable=not progress)
    for step in bar:
        idx = next(batches)
        loss = F.cross_entropy(model(random_shift(x[idx], cfg.max_shift, gen)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return ema.model, config

