"""The official AutoAttack code (``pyautoattack``, Croce & Hein 2020), called without letting it
touch our random state.

pyautoattack seeds torch's global generator inside its attacks (and falls back to a clock seed
when given none): every call here passes a seed and runs inside ``torch.random.fork_rng``, so
the global state is the same before and after (DESIGN.md §2).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from .._checks import check_choice, check_images, check_labels, check_positive
from .apgd import APGD_LOSSES
from .pgd import NORMS

AUTOATTACK_NORMS = {"linf": "Linf", "l2": "L2"}


@contextlib.contextmanager
def isolated_rng(device: torch.device):
    """Restore torch's global generators (CPU, and ``device`` if CUDA) when the block ends."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
         steps: int = 100, loss: str = "ce", restarts: int = 1, eot: int = 1,
         seed: int = 0) -> torch.Tensor:
    """APGD-CE / APGD-DLR (Croce & Hein 2020, Algorithm 1) from pyautoattack's ``APGDAttack``.

    Returns adversarial examples in the ε-ball around ``x`` (inputs in [0, 1]); the samples the
    attack does not break are returned unchanged, as AutoAttack does.
    """
    from pyautoattack.autopgd_base import APGDAttack

    check_images(x)
    y = check_labels(y, x.shape[0])
    check_choice(norm, NORMS, "norm")
    check_choice(loss, APGD_LOSSES, "APGD loss")
    attack = APGDAttack(model, n_iter=steps, norm=AUTOATTACK_NORMS[norm], n_restarts=restarts,
                        eps=check_positive(eps, "eps"), seed=seed, loss=loss, eot_iter=eot,
                        device=x.device)
    with isolated_rng(x.device):
        return attack.perturb(x, y).detach()


AUTOATTACK_VERSIONS = ("standard", "rand")


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
               norm: str = "linf", version: str = "standard", steps: int = 100,
               eot: int | None = None, square_queries: int = 5000, seed: int = 0,
               batch_size: int = 250) -> torch.Tensor:
    """AutoAttack (Croce & Hein 2020) from pyautoattack.

    ``standard``: APGD-CE, APGD-T (9 target classes), FAB-T, Square (``square_queries``);
    ``rand``: APGD-CE and APGD-DLR with EOT (default 20) for randomized defenses. ``steps`` is
    the iteration count of the APGD and FAB attacks (100 in the official setting). Each attack
    runs on the points not yet broken, judged by one stochastic evaluation of ``model``: that is
    what AutoAttack reports, and why advpure re-evaluates its outputs over several draws.
    """
    from pyautoattack import AutoAttack

    check_images(x)
    y = check_labels(y, x.shape[0])
    check_choice(norm, NORMS, "norm")
    check_choice(version, AUTOATTACK_VERSIONS, "AutoAttack version")
    runner = AutoAttack(model, norm=AUTOATTACK_NORMS[norm], eps=check_positive(eps, "eps"),
                        version=version, seed=seed, device=x.device)
    runner.verbose = False
    runner.apgd.n_iter = runner.apgd_targeted.n_iter = runner.fab.n_iter = steps
    runner.square.n_queries = square_queries
    if version == "rand":
        runner.apgd.eot_iter = 20 if eot is None else eot
    elif eot not in (None, 1):
        raise ValueError(f"autoattack: the standard version has no EOT, found eot={eot}")
    with isolated_rng(x.device):
        x_adv, _ = runner.run_standard_evaluation(x, y, batch_size=batch_size)
    return x_adv.detach()
