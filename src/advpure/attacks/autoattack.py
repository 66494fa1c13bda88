"""The official AutoAttack code (``pyautoattack``, Croce & Hein 2020), called without letting it
touch our random state.

pyautoattack seeds torch's global generator inside its attacks (and falls back to a clock seed
when given none): every call here passes a seed and runs inside ``torch.random.fork_rng``, so
the global state is the same before and after (DESIGN.md §2).
"""
from __future__ import annotations

import contextlib
from typing import Literal

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from .._checks import check_choice
from .base import NormBallAttack, check_attack_inputs, seed_from

AUTOATTACK_NORMS = {"linf": "Linf", "l2": "L2"}
AUTOATTACK_VERSIONS = ("standard", "rand")
RAND_EOT = 20                   # EOT of the rand version (Croce & Hein 2020)
SQUARE_QUERIES = 5000           # Square's queries in the standard version
APGD_LOSSES = ("ce", "dlr")     # the losses of pyautoattack's APGDAttack


@contextlib.contextmanager
def isolated_rng(device: torch.device):
    """Restore torch's global generators (CPU, and ``device`` if CUDA) when the block ends."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def apgd_official(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
         steps: int = 100, loss: str = "ce", restarts: int = 1, eot: int = 1,
         seed: int = 0, progress: bool = False) -> torch.Tensor:
    """APGD-CE / APGD-DLR (Croce & Hein 2020, Algorithm 1) from pyautoattack's ``APGDAttack``.

    Returns adversarial examples in the ε-ball around ``x`` (inputs in [0, 1]); the samples the
    attack does not break are returned unchanged, as AutoAttack does.
    """
    from pyautoattack.autopgd_base import APGDAttack

    y, eps = check_attack_inputs(x, y, model=model, norm=norm, eps=eps)
    check_choice(loss, APGD_LOSSES, "APGD loss")
    attack = APGDAttack(model, n_iter=steps, norm=AUTOATTACK_NORMS[norm], n_restarts=restarts,
                        eps=eps, seed=seed, loss=loss, eot_iter=eot,
                        device=x.device, verbose=progress)
    with isolated_rng(x.device):
        return attack.perturb(x, y).detach()



def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
               norm: str = "linf", version: str = "standard", steps: int = 100,
               eot: int | None = None, square_queries: int = SQUARE_QUERIES, seed: int = 0,
               batch_size: int = 250, progress: bool = False) -> torch.Tensor:
    """AutoAttack (Croce & Hein 2020) from pyautoattack.

    ``standard``: APGD-CE, APGD-T (9 target classes), FAB-T, Square (``square_queries``);
    ``rand``: APGD-CE and APGD-DLR with EOT (default 20) for randomized defenses. ``steps`` is
    the iteration count of the APGD and FAB attacks (100 in the official setting). Each attack
    runs on the points not yet broken, judged by one stochastic evaluation of ``model``: that is
    what AutoAttack reports, and why advpure re-evaluates its outputs over several draws.
    """
    from pyautoattack import AutoAttack

    y, eps = check_attack_inputs(x, y, model=model, norm=norm, eps=eps)
    check_choice(version, AUTOATTACK_VERSIONS, "AutoAttack version")
    runner = AutoAttack(model, norm=AUTOATTACK_NORMS[norm], eps=eps,
                        version=version, seed=seed, device=x.device)
    runner.verbose = progress                   # its own log of each attack's progress
    runner.apgd.n_iter = runner.apgd_targeted.n_iter = runner.fab.n_iter = steps
    runner.square.n_queries = square_queries
    if version == "rand":
        runner.apgd.eot_iter = RAND_EOT if eot is None else eot
    elif eot not in (None, 1):
        raise ValueError(f"autoattack: the standard version has no EOT, found eot={eot}")
    with isolated_rng(x.device):
        x_adv, _ = runner.run_standard_evaluation(x, y, batch_size=batch_size)
    return x_adv.detach()


class AutoAttackSettings(NormBallAttack):
    """The official AutoAttack: ``standard`` (APGD-CE, APGD-T, FAB-T, Square) or ``rand``
    (APGD-CE and APGD-DLR with EOT, for randomized defenses)."""

    name: Literal["autoattack"] = "autoattack"
    version: Literal[AUTOATTACK_VERSIONS] = Field("standard", description="standard | rand")
    steps: PositiveInt = Field(20, description="iterations of the APGD and FAB attacks "
                               "(official: 100)")
    eot: PositiveInt = Field(1, description=f"rand: EOT copies per gradient (not given: "
                             f"{RAND_EOT}); standard has none")
    queries: PositiveInt = Field(SQUARE_QUERIES, description="standard: Square's queries")

    @model_validator(mode="before")
    @classmethod
    def _rand_eot(cls, data):
        if isinstance(data, dict) and data.get("version") == "rand" and data.get("eot") is None:
            data = data | {"eot": RAND_EOT}
        return data

    @model_validator(mode="after")
    def _eot_only_when_rand(self):
        if self.version == "standard" and self.eot != 1:
            raise ValueError("AutoAttack's standard version has no EOT; use version='rand'")
        return self

    def budgets(self) -> dict[str, int]:
        unused = "queries" if self.version == "rand" else "eot"
        return {k: v for k, v in super().budgets().items() if k != unused}

    def run(self, model, x, y, generator):
        return autoattack(model, x, y, eps=self.eps, norm=self.norm, version=self.version,
                          steps=self.steps, eot=self.eot if self.version == "rand" else None,
                          square_queries=self.queries, seed=seed_from(generator))

    def label_parts(self) -> list[str]:
        parts = [self.version, self.eps_label(), f"{self.steps} steps"]
        if self.eot > 1:
            parts.append(f"EOT {self.eot}")
        if self.queries != SQUARE_QUERIES:
            parts.append(f"{self.queries} queries")
        return parts
