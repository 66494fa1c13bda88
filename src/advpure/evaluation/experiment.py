"""Run an evaluation: standard and robust accuracy of a (defended) classifier, over seeds."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import data
from ..attacks import pgd
from ..defense import PurifiedClassifier
from ..models import load_classifier, load_diffusion
from ..purifiers import AGDM, COUP, DiffPure, HeteroPure, coup_settings
from ..purifiers.agdm import agdm_t_star
from ..purifiers.hetero import hetero_times
from .config import AGDM_DEFAULT_GUIDANCE, AttackConfig, DefenseConfig, EvalConfig


def build_purifier(cfg: DefenseConfig, classifier: nn.Module,
                   eps_model: nn.Module | None = None, **overrides) -> nn.Module | None:
    """The configured purifier, or None for no defense.

    ``classifier`` is the defended classifier, COUP's guidance classifier unless the config
    names another and the source of the heterogeneous purifier's attention mask; ``eps_model`` reuses an already loaded diffusion model; ``overrides``
    replace purifier options (the surrogate's dt).
    """
    if cfg.name == "none":
        return None
    eps_model = load_diffusion(cfg.diffusion) if eps_model is None else eps_model
    if cfg.name == "coup":
        guide = classifier if cfg.guidance_classifier is None else \
            load_classifier(cfg.guidance_classifier)
        return COUP(eps_model, guide, **cfg.purifier_kwargs(**overrides))
    if cfg.name == "agdm":
        guide = load_classifier(cfg.guidance_classifier or AGDM_DEFAULT_GUIDANCE)
        return AGDM(eps_model, guide, **cfg.purifier_kwargs(**overrides))
    if cfg.name == "hetero":
        return HeteroPure(eps_model, classifier, **cfg.purifier_kwargs(**overrides))
    return DiffPure(eps_model, **cfg.purifier_kwargs(**overrides))


@dataclass
class Defense:
    """What an evaluation defends with: the purifier, its gradient mode, the surrogate."""

    config: DefenseConfig
    purifier: nn.Module | None
    surrogate: nn.Module | None

    @classmethod
    def build(cls, cfg: DefenseConfig, classifier: nn.Module) -> Defense:
        """The purifier, and for gradient='surrogate' the same one with step surrogate_dt."""
        purifier = build_purifier(cfg, classifier)
        surrogate = None
        if purifier is not None and cfg.surrogate_dt is not None:
            surrogate = build_purifier(cfg, classifier, purifier.model, dt=cfg.surrogate_dt)
        return cls(cfg, purifier, surrogate)

    def model(self, classifier: nn.Module, generator: torch.Generator) -> nn.Module:
        """The model attacks see: the bare classifier, or a PurifiedClassifier."""
        if self.purifier is None:
            return classifier
        return PurifiedClassifier(self.purifier, classifier, generator=generator,
                                  gradient=self.config.gradient, surrogate=self.surrogate,
                                  ensemble=self.config.ensemble,
                                  ensemble_rule=self.config.ensemble_rule)


def attack_batch(cfg: AttackConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
    if cfg.name == "none":
        return x
    return pgd(model, x, y, eps=cfg.eps, norm=cfg.norm, steps=cfg.steps, step_size=cfg.step_size,
               eot=cfg.eot, random_init=cfg.random_init, generator=generator)


def batch_generators(seed: int, start: int) -> tuple[torch.Generator, torch.Generator]:
    """(defense, attack) generators of the batch whose first subset position is ``start``.

    Deriving them from (seed, start) makes a batch's result independent of the batches run
    before it.
    """
    root = torch.Generator().manual_seed(seed * 1_000_003 + start)
    defense_seed, attack_seed = torch.randint(0, 2**62, (2,), generator=root).tolist()
    return (torch.Generator().manual_seed(defense_seed),
            torch.Generator().manual_seed(attack_seed))


@dataclass
class SeedResult:
    seed: int
    clean_correct: list[bool] = field(default_factory=list)
    adv_correct: list[bool] = field(default_factory=list)
    seconds: float = 0.0
    x_adv: list[torch.Tensor] = field(default_factory=list, repr=False)

    def accuracy(self, which: str) -> float:
        values = self.clean_correct if which == "standard" else self.adv_correct
        return sum(values) / len(values)


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def evaluate_seed(cfg: EvalConfig, defense: Defense, classifier: nn.Module,
                  x: torch.Tensor, y: torch.Tensor, seed: int,
                  bar: tqdm | None = None) -> SeedResult:
    """Standard accuracy on clean inputs and robust accuracy on the attack's outputs."""
    result, start_time = SeedResult(seed), time.perf_counter()
    for start in range(0, len(y), cfg.batch_size):
        xb, yb = x[start:start + cfg.batch_size], y[start:start + cfg.batch_size]
        defense_gen, attack_gen = batch_generators(seed, start)
        model = defense.model(classifier, defense_gen)
        result.clean_correct += (predict(model, xb) == yb).tolist()
        x_adv = attack_batch(cfg.attack, model, xb, yb, attack_gen)
        result.adv_correct += (predict(model, x_adv) == yb).tolist()
        result.x_adv.append(x_adv)
        if bar is not None:
            bar.update(len(yb))
    result.seconds = time.perf_counter() - start_time
    return result


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single seed)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std}


@dataclass
class EvalResult:
    """Everything one evaluation produced; ``summary()`` is what gets written as JSON."""

    config: EvalConfig
    per_seed: list[SeedResult]
    subset_indices: list[int]

    def accuracy(self, which: str) -> dict[str, float]:
        """Mean ± std over seeds of 'standard' or 'robust' accuracy."""
        return mean_std([r.accuracy(which) for r in self.per_seed])

    def summary(self) -> dict:
        return {
            "config": self.config.model_dump(mode="json"),
            "standard_accuracy": self.accuracy("standard"),
            "robust_accuracy": self.accuracy("robust"),
            "per_seed": [{"seed": r.seed, "standard_accuracy": r.accuracy("standard"),
                          "robust_accuracy": r.accuracy("robust"), "seconds": r.seconds,
                          "clean_correct": r.clean_correct, "adv_correct": r.adv_correct}
                         for r in self.per_seed],
            "subset_indices": self.subset_indices,
        }


def run_evaluation(cfg: EvalConfig, progress: bool = True) -> EvalResult:
    """Evaluate ``cfg`` on its fixed subset for every seed."""
    x_all, y_all = data.load(cfg.dataset, cfg.split, root=cfg.data_root)
    x, y, indices = data.fixed_subset(x_all, y_all, cfg.n, cfg.subset_seed)
    classifier = load_classifier(cfg.classifier)
    defense = Defense.build(cfg.defense, classifier)
    with tqdm(total=len(y) * len(cfg.seeds), desc=describe(cfg), disable=not progress) as bar:
        per_seed = [evaluate_seed(cfg, defense, classifier, x, y, s, bar) for s in cfg.seeds]
    return EvalResult(cfg, per_seed, indices.tolist())


def describe_defense(d: DefenseConfig) -> str:
    """'diffpure-ddim(t*=0.1±0.02, dt=0.01, ddim_eta=0.5) [checkpoint gradient]': the purifier,
    what was set, and the gradient mode unless exact."""
    if d.name == "none":
        return "none"
    describe_body = {"coup": _describe_coup, "agdm": _describe_agdm,
                     "hetero": _describe_hetero}.get(d.name, _describe_diffpure)
    body = describe_body(d)
    if d.ensemble > 1:
        body += f" ×{d.ensemble} {d.ensemble_rule}"
    return body if d.gradient == "exact" else f"{body} [{d.gradient} gradient]"


def _describe_diffpure(d: DefenseConfig) -> str:
    sampler = "" if d.sampler == "sde" else f"-{d.sampler}"
    parts = [] if d.t_star is None and d.sampler == "ld" else [f"t*={d.t_star or 0.1:g}"]
    if d.t_star_delta:
        parts[0] += f"±{d.t_star_delta:g}"
    parts.append(f"dt={d.dt:g}")
    parts += [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
              for k, v in d.sampler_option_values().items() if v is not None]
    return f"diffpure{sampler}({', '.join(parts)})"


def _describe_coup(d: DefenseConfig) -> str:
    t_star, scale = coup_settings(d.t_star, d.guidance_scale, d.preset)
    parts = [f"t*={t_star:g}", f"λ={scale:g}", f"dt={d.dt:g}"]
    if d.forward_noise:
        parts.append("forward noise")
    if d.guidance_grad == "first_order":
        parts.append("first-order guidance gradient")
    if d.guidance_classifier is not None:
        parts.append(f"guided by {d.guidance_classifier}")
    return f"coup({', '.join(parts)})"


def _describe_agdm(d: DefenseConfig) -> str:
    scale = 1.0 if d.guidance_scale is None else d.guidance_scale
    parts = [f"t*={agdm_t_star(d.t_star):g}", f"s={scale:g}", f"dt={d.dt:g}"]
    parts += [f"{k}={v}" for k, v in (("form", d.form), ("D", d.guidance_distance),
                                       ("ŷ from", d.guidance_label),
                                       ("variance", d.ddpm_variance)) if v is not None]
    if d.guidance_grad == "first_order":
        parts.append("first-order guidance gradient")
    parts.append(f"φ={d.guidance_classifier or AGDM_DEFAULT_GUIDANCE}")
    return f"agdm({', '.join(parts)})"


def _describe_hetero(d: DefenseConfig) -> str:
    t_large, t_small = hetero_times(d.t_large, d.t_small)
    parts = [f"t_l={t_large:g}", f"t_s={t_small:g}", f"τ={0.8 if d.tau is None else d.tau:g}",
             f"dt={d.dt:g}"]
    if d.resampling is not None or d.resample_jumps is not None:
        parts.append(f"resampling={d.resampling or 'single'}, U={d.resample_jumps or 10}")
    parts += [f"{k}={v}" for k, v in (("resample", d.resample_stage),
                                       ("mask", d.mask_normalisation),
                                       ("variance", d.ddpm_variance)) if v is not None]
    if d.mask_blocks is not None:
        parts.append(f"blocks={','.join(d.mask_blocks)}")
    return f"hetero({', '.join(parts)})"


def describe(cfg: EvalConfig) -> str:
    """A short human label such as 'diffpure(t*=0.1, dt=0.01) vs pgd-linf(eps=0.2, 20 steps, EOT 4)'."""
    a = cfg.attack
    attack = "none" if a.name == "none" else (
        f"pgd-{a.norm}(eps={a.eps:.3g}, {a.steps} steps, EOT {a.eot})")
    return f"{describe_defense(cfg.defense)} vs {attack}"
