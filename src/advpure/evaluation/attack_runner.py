"""Run one configured attack (``AttackConfig``) against a defense, with its own generators."""
from __future__ import annotations

import torch
from torch import nn

from ..attacks import apgd_eot, autoattack, pgd
from ..attacks.others import diffusion_only, square, stadv
from .config import AttackConfig


def seed_from(generator: torch.Generator) -> int:
    """A seed for code that takes an integer (pyautoattack), drawn from ``generator``."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def attack_model(attack: AttackConfig, defense, classifier: nn.Module,
                 generator: torch.Generator) -> nn.Module:
    """What the attack queries and differentiates: the bare classifier for ``transfer``, the
    defense with the identity as the purifier's backward pass for ``bpda``, else the defense."""
    if attack.name == "transfer":
        return classifier
    return defense.model(classifier, generator, gradient="bpda" if attack.name == "bpda" and
                         defense.purifier is not None else None)


def run_attack(attack: AttackConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
    """Adversarial examples of ``attack`` on ``model`` (see ``attack_model``); ``generator``
    drives the attack's own randomness (random starts, pyautoattack's seed)."""
    a, eot = attack, attack.eot_copies()
    if a.name in ("pgd", "bpda", "transfer"):
        return pgd(model, x, y, eps=a.eps, norm=a.norm, steps=a.steps, step_size=a.step_size,
                   eot=1 if a.name == "transfer" else eot, random_init=a.random_init,
                   generator=generator)
    if a.name == "diffusion":
        return diffusion_only(model.purify, x, eps=a.eps, norm=a.norm, steps=a.steps,
                              step_size=a.step_size, eot=eot, generator=generator)
    if a.name == "apgd":
        return apgd_eot(model, x, y, eps=a.eps, norm=a.norm, steps=a.steps, loss=a.loss or "ce",
                        eot=eot, generator=generator)
    if a.name == "autoattack":
        return autoattack(model, x, y, eps=a.eps, norm=a.norm, version=a.version or "standard",
                          steps=a.steps, eot=a.eot, square_queries=a.queries or 5000,
                          seed=seed_from(generator))
    if a.name == "square":
        return square(model, x, y, eps=a.eps, norm=a.norm, queries=a.queries or 5000,
                      seed=seed_from(generator))
    if a.name == "stadv":
        return stadv(model, x, y, bound=a.bound or 0.05, steps=a.steps, lr=a.lr or 0.01, eot=eot)
    raise ValueError(f"run_attack: expected an attack, found {a.name!r}")
