"""Restarts: run an attack again, from a new random start, on the images it has not broken yet.

After each run every image's candidate is scored on ``draws`` fresh draws of the defense (how
many of them misclassify it; targeted: predict the target). A restart runs only on the images
that some draw still gets right, and an image keeps the candidate with the most failed draws
(ties: the earlier one), as AutoAttack keeps the first run that fools the model. The final
robust accuracy is measured afterwards on the evaluation's own fresh draws, so choosing the
best restart on these draws does not bias it.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .drawlog import DrawLog, record
from .eot import Model
from .losses import failed

AttackOnce = Callable[[torch.Tensor, torch.Tensor, DrawLog | None], torch.Tensor]
# (x, labels, the log of those images) -> x_adv


def failed_draws(model: Model, x: torch.Tensor, labels: torch.Tensor, draws: int
                 ) -> torch.Tensor:
    """How many of ``draws`` predictions of ``model`` on x are attack successes, per image."""
    with torch.no_grad():
        rows = x.repeat(draws, *([1] * (x.dim() - 1)))
        hits = failed(model(rows), labels.repeat(draws, *([1] * (labels.dim() - 1))))
    return hits.view(draws, x.shape[0]).sum(dim=0)


def with_restarts(attack_once: AttackOnce, model: Model, x: torch.Tensor,
                  labels: torch.Tensor, restarts: int, draws: int,
                  log: DrawLog | None = None) -> torch.Tensor:
    """``attack_once`` run ``restarts`` times (see the module doc); one run without scoring.
    ``log`` sees every run's draws and the scoring draws."""
    if not (isinstance(restarts, int) and restarts >= 1):
        raise ValueError(f"restarts: expected a whole number >= 1, found {restarts!r}")
    best = attack_once(x, labels, log).detach()
    if restarts == 1:
        return best
    score = failed_draws(model, best, labels, draws)
    record(log, score > 0)
    for _ in range(restarts - 1):
        todo = (score < draws).nonzero()[:, 0]
        if len(todo) == 0:
            break
        part = None if log is None else log.subset(todo)
        candidate = attack_once(x[todo], labels[todo], part).detach()
        candidate_score = failed_draws(model, candidate, labels[todo], draws)
        record(part, candidate_score > 0)
        better = candidate_score > score[todo]
        best[todo[better]], score[todo[better]] = candidate[better], candidate_score[better]
    return best
