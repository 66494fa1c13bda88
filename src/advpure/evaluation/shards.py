"""Shards: the unit of work, of recording and of resuming. A shard is one batch of images of one
seed; it is evaluated from the frozen config alone (``evaluate_shard``: the config's JSON and the
shard, never a pickled model), so any process — this one, a Ray worker on another machine, a run
started again after a crash — computes the same outcomes for it. Its randomness comes from (seed,
position of its first image in its subset) through ``batch_generators``, not from which
process or in which order shards run.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .. import data
from ..models import load_classifier
from .config import EvalConfig
from .experiment import Defense, evaluate_batch, evaluate_clean_batch
from .results import CLEAN
from .store import Outcome


@dataclass(frozen=True)
class Shard:
    """One batch: ``indices`` (dataset indices) of ``seed``, starting at position ``start`` of
    the robust subset (``attacked``: clean and every attack) or of the standard-accuracy images
    outside it (clean only)."""

    seed: int
    start: int
    indices: tuple[int, ...]
    attacked: bool

    def keys(self, attacks: list[str]) -> set[tuple[int, str, int]]:
        """The (seed, attack, sample index) records the shard produces."""
        kinds = [CLEAN, *attacks] if self.attacked else [CLEAN]
        return {(self.seed, kind, i) for kind in kinds for i in self.indices}

    def __str__(self) -> str:
        part = "robust subset" if self.attacked else "standard images"
        return f"seed {self.seed}, {part} [{self.start}:{self.start + len(self.indices)}]"


def plan_shards(cfg: EvalConfig, robust: torch.Tensor, extra: torch.Tensor) -> list[Shard]:
    """Every shard of a run, seed by seed: the robust subset, then the other standard images, in
    batches of ``cfg.batch_size``."""
    shards = []
    for seed in cfg.seeds:
        for indices, attacked in ((robust, True), (extra, False)):
            for start in range(0, len(indices), cfg.batch_size):
                batch = tuple(indices[start:start + cfg.batch_size].tolist())
                shards.append(Shard(seed, start, batch, attacked))
    return shards


class ShardEvaluator:
    """What a shard needs, built once per process from the config: the classifier, the defense
    and the attacks."""

    def __init__(self, cfg: EvalConfig):
        self.cfg = cfg
        self.classifier = load_classifier(cfg.classifier)
        self.defense = Defense.build(cfg.defense, self.classifier)
        self.attacks = cfg.resolved_attacks()

    def __call__(self, shard: Shard) -> list[Outcome]:
        cfg = self.cfg
        indices = torch.tensor(shard.indices)
        x, y = data.load(cfg.dataset, cfg.split, root=cfg.data_root, indices=indices)
        if shard.attacked:
            return evaluate_batch(cfg, self.defense, self.classifier, self.attacks, x, y,
                                  indices, shard.seed, shard.start)
        return evaluate_clean_batch(cfg, self.defense, self.classifier, x, y, indices,
                                    shard.seed, shard.start)


@functools.lru_cache(maxsize=1)
def shard_evaluator(config_json: str) -> ShardEvaluator:
    """The models of a config, built once per process and kept for its shards."""
    return ShardEvaluator(EvalConfig.model_validate_json(config_json))


def evaluate_shard(config_json: str, shard: Shard) -> list[Outcome]:
    """The outcomes of ``shard`` under the config (the models built on the first call of a
    process and kept for its next shards of the same config)."""
    return shard_evaluator(config_json)(shard)
