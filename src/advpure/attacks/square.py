"""Square Attack (Andriushchenko et al. 2020): black-box, the official code from pyautoattack."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from .autoattack import AUTOATTACK_NORMS, SQUARE_QUERIES, isolated_rng
from .base import NormBallAttack, check_attack_inputs, seed_from


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
           norm: str = "linf", queries: int = SQUARE_QUERIES, seed: int = 0,
           progress: bool = False) -> torch.Tensor:
    """Square Attack (Andriushchenko et al. 2020), black-box, from pyautoattack (p_init 0.8, one
    restart, as in AutoAttack); run with an explicit seed inside ``fork_rng``; ``progress``: its
    own log of the queries."""
    from pyautoattack.square import SquareAttack

    y, eps = check_attack_inputs(x, y, model=model, norm=norm, eps=eps)
    attack = SquareAttack(model, p_init=0.8, n_queries=queries, eps=eps,
                          norm=AUTOATTACK_NORMS[norm], n_restarts=1, seed=seed, verbose=progress,
                          device=x.device, resc_schedule=False)
    with isolated_rng(x.device):
        return attack.perturb(x, y).detach()



class SquareSettings(NormBallAttack):
    """The black-box Square Attack: queries, never gradients."""

    name: Literal["square"] = "square"
    queries: PositiveInt = Field(SQUARE_QUERIES, description="Square's queries")

    def run(self, model, x, y, generator):
        return square(model, x, y, eps=self.eps, norm=self.norm, queries=self.queries,
                      seed=seed_from(generator))

    def label_parts(self) -> list[str]:
        queries = [] if self.queries == SQUARE_QUERIES else [f"{self.queries} queries"]
        return [self.eps_label()] + queries

