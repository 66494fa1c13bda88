"""What one evaluation batch does: build the defense from its config, attack the batch, predict
in several purification draws; and how runs are named (``describe``)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..accelerate import accelerated
from ..attacks.drawlog import AttackOutput
from ..defense import PurifiedClassifier
from ..models import load_classifier, load_diffusion
from ..purifiers import DefenseSettings, Models, Repeated, Resized
from .config import EvalConfig
from .results import CLEAN
from .store import Outcome


def build_purifier(cfg: DefenseSettings, classifier: nn.Module,
                   eps_model: nn.Module | None = None) -> nn.Module | None:
    """The configured purifier, or None for no defense.

    ``classifier`` is the defended classifier (COUP's guidance unless the settings name another,
    the heterogeneous purifier's mask source); ``eps_model`` reuses an already loaded diffusion
    model. With ``rounds`` > 1 it runs that many times in a row (``Repeated``; GDMP runs its
    rounds itself); with ``purify_size`` at that resolution (``Resized``: DiffPure's
    224 → 256 → 224 on ImageNet).
    """
    if cfg.name == "none":
        return None
    if eps_model is None:
        eps_model = accelerated(load_diffusion(cfg.diffusion), cfg.precision, cfg.compile,
                                cfg.channels_last)
    purifier = cfg.build(Models(eps_model, classifier, load_classifier))
    if cfg.rounds > 1 and not getattr(cfg, "runs_rounds", False):
        purifier = Repeated(purifier, cfg.rounds)
    return purifier if cfg.purify_size is None else Resized(purifier, cfg.purify_size)


@dataclass
class Defense:
    """What an evaluation defends with: the purifier, its gradient mode, the surrogate."""

    config: DefenseSettings
    purifier: nn.Module | None
    surrogate: nn.Module | None
    fast: dict[int, nn.Module] = field(default_factory=dict)   # classifiers as configured

    @classmethod
    def build(cls, cfg: DefenseSettings, classifier: nn.Module) -> Defense:
        """The purifier, and for gradient='surrogate' the same one with step surrogate_dt."""
        purifier = build_purifier(cfg, classifier)
        surrogate = None
        if purifier is not None and cfg.surrogate_dt is not None:
            cheaper = cfg.replace(dt=cfg.surrogate_dt, gradient="exact", surrogate_dt=None)
            surrogate = build_purifier(cheaper, classifier, purifier.model)
        return cls(cfg, purifier, surrogate)

    def model(self, classifier: nn.Module, generator: torch.Generator,
              gradient: str | None = None) -> nn.Module:
        """The model attacks see: the bare classifier, or a PurifiedClassifier whose backward
        pass is the configured gradient mode (or ``gradient``, e.g. BPDA's 'bpda')."""
        if self.purifier is None:
            return classifier
        gradient = gradient or self.config.gradient
        cfg = self.config
        if id(classifier) not in self.fast:        # one wrapper per classifier (compile cache)
            self.fast[id(classifier)] = accelerated(classifier, cfg.precision, cfg.compile,
                                                    cfg.channels_last)
        return PurifiedClassifier(self.purifier, self.fast[id(classifier)], generator=generator,
                                  gradient=gradient,
                                  surrogate=self.surrogate if gradient == "surrogate" else None,
                                  ensemble=cfg.ensemble, ensemble_rule=cfg.ensemble_rule,
                                  memory_budget=cfg.memory_budget if gradient == "checkpoint"
                                  else None, rows_per_pass=cfg.rows_per_pass)


def batch_generators(seed: int, start: int, stream: int = 0
                     ) -> tuple[torch.Generator, torch.Generator]:
    """(defense, attack) generators of the batch whose first subset position is ``start``, for
    the ``stream``-th attack (stream 0 also serves the clean evaluation).

    Deriving them from (seed, start, stream) makes a batch's result under an attack independent
    of the batches and attacks run before it.
    """
    root = torch.Generator().manual_seed(seed * 1_000_003 + start + stream * 7_919_009)
    defense_seed, attack_seed = torch.randint(0, 2**62, (2,), generator=root).tolist()
    return (torch.Generator().manual_seed(defense_seed),
            torch.Generator().manual_seed(attack_seed))


def predict_draws(model: nn.Module, x: torch.Tensor, draws: int) -> torch.Tensor:
    """Labels predicted in ``draws`` independent calls (fresh purification noise each): R × N."""
    with torch.no_grad():
        return torch.stack([model(x).argmax(1) for _ in range(draws)])


def _outcomes(seed: int, attack: str, indices: torch.Tensor, y: torch.Tensor,
              predictions: torch.Tensor, seconds: float, x_adv: torch.Tensor | None = None,
              broken: torch.Tensor | None = None) -> list[Outcome]:
    return [Outcome(seed, attack, int(i), int(label), tuple(predictions[:, k].tolist()),
                    seconds / len(y), None if x_adv is None else x_adv[k],
                    None if broken is None else bool(broken[k]))
            for k, (i, label) in enumerate(zip(indices, y))]


def evaluate_batch(cfg: EvalConfig, defense: Defense, classifier: nn.Module, attacks,
                   xb: torch.Tensor, yb: torch.Tensor, ib: torch.Tensor, seed: int, start: int
                   ) -> list[Outcome]:
    """Clean and per-attack outcomes of one batch of the robust subset, each final input
    evaluated in ``draws`` purification draws; the attack outcomes carry their adversarial
    images."""
    outcomes = []
    for stream, attack in enumerate(attacks or [None]):
        defense_gen, attack_gen = batch_generators(seed, start, stream)
        model = defense.model(classifier, defense_gen)
        if stream == 0:
            began = time.perf_counter()
            clean = predict_draws(model, xb, cfg.draws)
            outcomes += _outcomes(seed, CLEAN, ib, yb, clean, time.perf_counter() - began)
        if attack is None:
            break
        began = time.perf_counter()
        result = AttackOutput.of(attack.run(attack.target(defense, classifier, defense_gen),
                                            xb, yb, attack_gen))
        predictions = predict_draws(model, result.x_adv, cfg.draws)
        outcomes += _outcomes(seed, attack.key(), ib, yb, predictions,
                              time.perf_counter() - began, result.x_adv.detach(), result.broken)
    return outcomes


CLEAN_STREAM = 1_000     # generators of the clean images outside the robust subset


def evaluate_clean_batch(cfg: EvalConfig, defense: Defense, classifier: nn.Module,
                         xb: torch.Tensor, yb: torch.Tensor, ib: torch.Tensor, seed: int,
                         start: int) -> list[Outcome]:
    """Clean outcomes of a batch of the standard-accuracy images outside the robust subset
    (``start``: the batch's position among those images)."""
    model = defense.model(classifier, batch_generators(seed, start, CLEAN_STREAM)[0])
    began = time.perf_counter()
    predictions = predict_draws(model, xb, cfg.draws)
    return _outcomes(seed, CLEAN, ib, yb, predictions, time.perf_counter() - began)


def evaluation_subsets(cfg: EvalConfig, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(robust, standard) dataset indices: fixed subsets of one seed, so the robust subset (n,
    at most the split) is part of the standard one (standard_n, or the whole split)."""
    generator = torch.Generator().manual_seed(cfg.subset_seed)
    order = torch.randperm(size, generator=generator)
    standard = order[:min(cfg.standard_n or size, size)]
    return standard[:min(cfg.n, size)].sort().values, standard.sort().values


def describe(cfg: EvalConfig) -> str:
    """A short human label such as 'diffpure(t*=0.1, dt=0.01) vs pgd-linf(eps=0.2, 20 steps,
    EOT 4)'; a protocol is named with its caps."""
    if cfg.protocol is not None:
        caps = [f"{k.removeprefix('max_')} ≤ {v}" for k, v in
                (("max_steps", cfg.max_steps), ("max_eot", cfg.max_eot),
                 ("max_queries", cfg.max_queries)) if v is not None]
        attacks = f"protocol {cfg.protocol}" + (f" ({', '.join(caps)})" if caps else "")
    else:
        attacks = " + ".join(a.key() for a in cfg.attacks) or "none"
    return f"{cfg.defense.describe()} vs {attacks}"
