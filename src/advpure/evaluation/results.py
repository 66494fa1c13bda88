"""What an evaluation produced, computed from its per-image outcomes alone (so that a run's
record store rebuilds every table; see ``stats.py`` for the definitions)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace

import torch

from .config import EvalConfig
from .stats import accuracy_summary, papers_rule, single_draw_correct
from .store import Outcome

CLEAN = "clean"
KINDS = ("single_draw", "vote", "all_draws", "any_iterate")     # see stats.py


def fresh_worst_case(outcomes: list[Outcome], kind: str, split: int) -> float:
    """One image's worst case over attacks (its outcome under each, the attacks in order of
    preference: a tie goes to the first): choose the attack of the lowest single-draw accuracy
    on the first ``split`` draws, then take ``kind`` on the rest (all draws where ``split`` is
    0: the biased minimum, said in the report)."""
    if split == 0:
        return min(float(getattr(o, kind)) for o in outcomes)
    chosen = min(outcomes, key=lambda o: single_draw_correct(o.predictions[:split], o.label))
    return float(getattr(replace(chosen, predictions=chosen.predictions[split:]), kind))


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation over seeds (0 for a single seed), and the number of
    seeds (so that a single seed's "± 0" is not printed)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "seeds": len(values)}


@dataclass
class EvalResult:
    """The outcomes of one evaluation. ``subset_indices``: the robust subset (attacked);
    ``standard_indices``: the images of standard accuracy (a superset; default the same);
    ``attacks``: the attack keys in run order; ``adversarial``: the first seed's adversarial
    images per (seed, attack key), where the run has them all."""

    config: EvalConfig
    subset_indices: list[int]
    attacks: list[str]
    outcomes: list[Outcome]
    adversarial: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict, repr=False)
    standard_indices: list[int] | None = None

    def __post_init__(self):
        if self.standard_indices is None:
            self.standard_indices = list(self.subset_indices)
        self._indexed: dict[tuple[int, str], dict[int, Outcome]] = {}
        for o in self.outcomes:                    # (seed, attack) -> sample index -> outcome
            self._indexed.setdefault((o.seed, o.attack), {})[o.sample_index] = o

    @property
    def seconds(self) -> dict[int, float]:
        """Compute time per seed: the sum of its outcomes' times (each a share of its batch's)."""
        totals: dict[int, float] = {}
        for o in self.outcomes:
            totals[o.seed] = totals.get(o.seed, 0.0) + o.seconds
        return totals

    def logged_attacks(self) -> set[str]:
        """The attacks whose outcomes say whether a draw they scored erred (DiffHammer's rule
        counts those; for the others it is the all-draws accuracy)."""
        return {o.attack for o in self.outcomes if o.attack_broken is not None}

    def attack_seconds(self) -> dict[str, float]:
        """Compute time per attack (and clean), mean over seeds: what each attack cost."""
        totals: dict[str, float] = {}
        for o in self.outcomes:
            totals[o.attack] = totals.get(o.attack, 0.0) + o.seconds
        return {a: t / len(self.config.seeds) for a, t in totals.items()}

    def perceptual(self) -> dict[str, dict[str, float]]:
        """Per attack, how far its adversarial images are from the clean ones (first seed, the
        images the run keeps with ``save_adversarial``): mean SSIM (``advpure.metrics``; LPIPS
        needs pretrained weights that cannot be had offline), mean ℓ∞ and ℓ2 distances."""
        from .. import data
        from ..metrics import ssim

        seed = self.config.seeds[0]
        kept = {a: self.adversarial[(seed, a)] for a in self.attacks
                if (seed, a) in self.adversarial and self.config.save_adversarial}
        if not kept:
            return {}
        cfg = self.config
        x, _ = data.load(cfg.dataset, cfg.split, root=cfg.data_root,
                         indices=torch.tensor(self.subset_indices))
        distances = {}
        for attack, x_adv in kept.items():
            delta = (x_adv - x[:len(x_adv)]).flatten(1)
            distances[attack] = {"ssim": float(ssim(x[:len(x_adv)], x_adv).mean()),
                                 "linf": float(delta.abs().max(dim=1).values.mean()),
                                 "l2": float(delta.norm(dim=1).mean())}
        return distances

    def correct(self, seed: int, attack: str, kind: str = "single_draw",
                on_subset: bool = False) -> list[float]:
        """Per-image correctness of one seed under ``attack`` (robust subset order), or clean
        (standard set order; ``on_subset``: the robust subset's clean outcomes)."""
        by_index = self._indexed.get((seed, attack), {})
        images = self.standard_indices if attack == CLEAN and not on_subset else \
            self.subset_indices
        missing = [i for i in images if i not in by_index]
        if missing:
            raise KeyError(f"no outcome of seed {seed}, {attack!r} for {len(missing)} images")
        return [float(getattr(by_index[i], kind)) for i in images]

    def robust_correct(self, seed: int, kind: str = "single_draw") -> list[float]:
        """Per image, the worst case over the attacks (ours). Single draw, on fresh draws: the
        attack is chosen on the image's first ``selection_draws`` draws (lowest single-draw
        accuracy; a tie goes to the attack strongest over all images on those same draws) and
        scored on the other draws, so that the minimum of noisy estimates does not pick up
        draw noise (``fresh_worst_case``). Vote, all draws, any iterate: the per-image minimum
        over all R draws — the image survives every attack under that rule, an event each
        outcome observes without bias. The clean outcome without any attack."""
        if not self.attacks:
            return self.correct(seed, CLEAN, kind, on_subset=True)
        self.correct(seed, self.attacks[0], kind)                 # every outcome is there
        split = self.selection_draws if kind == "single_draw" else 0
        attacks = sorted(self.attacks, key=lambda a: self._selection_accuracy(seed, a, split))
        return [fresh_worst_case([self._indexed[(seed, a)][i] for a in attacks], kind, split)
                for i in self.subset_indices]

    def _selection_accuracy(self, seed: int, attack: str, split: int) -> float:
        """An attack's single-draw accuracy over the images on the first ``split`` draws."""
        if split == 0:
            return 0.0
        outcomes = [self._indexed[(seed, attack)][i] for i in self.subset_indices]
        return statistics.fmean(single_draw_correct(o.predictions[:split], o.label)
                                for o in outcomes)

    @property
    def selection_draws(self) -> int:
        """How many of the R draws choose the worst case's attack: ⌊R/2⌋ where there is a
        choice (several attacks), 0 with one attack (the worst case is that attack on all R
        draws) or R = 1 (the choice and the score share the draw)."""
        return self.config.draws // 2 if len(self.attacks) > 1 else 0

    def accuracy(self, which: str, kind: str = "single_draw") -> dict[str, float]:
        """Mean ± std over seeds of 'standard' accuracy, 'robust' (worst case over attacks) or
        one attack's accuracy (its key)."""
        def per_seed(seed: int) -> list[float]:
            if which == "standard":
                return self.correct(seed, CLEAN, kind)
            if which == "robust":
                return self.robust_correct(seed, kind)
            return self.correct(seed, which, kind)
        return mean_std([statistics.fmean(per_seed(s)) for s in self.config.seeds])

    def per_image(self, which: str, kind: str = "single_draw") -> list[float]:
        """Each image's correctness averaged over the seeds (the image is the unit)."""
        def per_seed(seed: int) -> list[float]:
            return self.correct(seed, CLEAN, kind) if which == "standard" else \
                self.robust_correct(seed, kind) if which == "robust" else \
                self.correct(seed, which, kind)
        return [statistics.fmean(v) for v in zip(*(per_seed(s) for s in self.config.seeds))]

    def interval(self, which: str, kind: str = "single_draw") -> dict[str, float]:
        """The 95 % Wilson interval of an accuracy at the effective number of images, each
        image's correctness averaged over its seeds (and draws, for the single-draw kind):
        re-running the same images with more seeds or draws does not count as more images
        beyond what their spread supports (``stats.accuracy_summary``)."""
        return accuracy_summary(self.per_image(which, kind), self.observations(which, kind))

    def draws_scored(self, which: str, kind: str = "single_draw") -> int:
        """The draws each image's outcome is scored on: R, or the fresh R − ⌊R/2⌋ of the
        single-draw worst case ('robust')."""
        fresh = which == "robust" and kind == "single_draw"
        return self.config.draws - self.selection_draws if fresh else self.config.draws

    def observations(self, which: str, kind: str) -> int:
        """How many 0/1 outcomes each image's correctness averages."""
        per_seed = self.draws_scored(which) if kind == "single_draw" else 1
        return len(self.config.seeds) * per_seed

    def autoattack_papers_rule(self) -> dict[str, float] | None:
        """The papers' AutoAttack number: min over versions of the aggregate accuracy, per seed
        (None unless both the standard and the rand version ran)."""
        versions = [a for a in self.attacks if a.startswith("autoattack")]
        if not any("(standard" in a for a in versions) or not any("(rand" in a for a in versions):
            return None
        return mean_std([papers_rule({a: statistics.fmean(self.correct(s, a)) for a in versions})
                         for s in self.config.seeds])

    def summary(self) -> dict:
        """Everything the report needs, as JSON-ready values."""
        rows = {}
        for which in ("standard", *self.attacks, "robust"):
            rows[which] = {kind: {**self.accuracy(which, kind), **self.interval(which, kind)}
                           for kind in KINDS}
        return {
            "config": self.config.model_dump(mode="json"),
            "standard_accuracy": self.accuracy("standard"),
            "robust_accuracy": self.accuracy("robust"),
            "accuracies": rows,
            "draws_scored": {which: {kind: self.draws_scored(which, kind) for kind in KINDS}
                             for which in rows},
            "autoattack_papers_rule": self.autoattack_papers_rule(),
            "budget_reductions": self.config.budget_reductions(),
            "attack_seconds": self.attack_seconds(),
            "perceptual": self.perceptual(),
            "per_image": {a: self.per_image(a) for a in self.attacks},
            "note": self.config.note,
            "per_seed": [{"seed": s, "seconds": self.seconds.get(s),
                          "standard_accuracy": statistics.fmean(self.correct(s, CLEAN)),
                          "robust_accuracy": statistics.fmean(self.robust_correct(s)),
                          "clean_correct": self.correct(s, CLEAN),
                          "adv_correct": self.robust_correct(s)}
                         for s in self.config.seeds],
            "subset_indices": self.subset_indices,
            "standard_indices": self.standard_indices,
        }
