"""What one evaluation batch does: build the defense from its config, attack the batch, predict
in several purification draws; and how runs are named (``describe``)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from ..defense import PurifiedClassifier
from ..models import load_classifier, load_diffusion
from ..purifiers import AGDM, COUP, DiffPure, HeteroPure, Resized, coup_settings
from ..purifiers.agdm import agdm_t_star
from ..purifiers.hetero import hetero_times
from .attack_runner import attack_model, run_attack
from .config import AGDM_DEFAULT_GUIDANCE, DefenseConfig, EvalConfig
from .results import CLEAN
from .store import Outcome


def build_purifier(cfg: DefenseConfig, classifier: nn.Module,
                   eps_model: nn.Module | None = None, **overrides) -> nn.Module | None:
    """The configured purifier, or None for no defense.

    ``classifier`` is the defended classifier, COUP's guidance classifier unless the config
    names another and the source of the heterogeneous purifier's attention mask; ``eps_model`` reuses an already loaded diffusion model; ``overrides``
    replace purifier options (the surrogate's dt). With ``purify_size`` the purifier runs at
    that resolution (``Resized``: DiffPure's 224 → 256 → 224 on ImageNet).
    """
    if cfg.name == "none":
        return None
    eps_model = load_diffusion(cfg.diffusion) if eps_model is None else eps_model
    purifier = _purifier(cfg, classifier, eps_model, **overrides)
    return purifier if cfg.purify_size is None else Resized(purifier, cfg.purify_size)


def _purifier(cfg: DefenseConfig, classifier: nn.Module, eps_model: nn.Module,
              **overrides) -> nn.Module:
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

    def model(self, classifier: nn.Module, generator: torch.Generator,
              gradient: str | None = None) -> nn.Module:
        """The model attacks see: the bare classifier, or a PurifiedClassifier whose backward
        pass is the configured gradient mode (or ``gradient``, e.g. BPDA's 'bpda')."""
        if self.purifier is None:
            return classifier
        gradient = gradient or self.config.gradient
        return PurifiedClassifier(self.purifier, classifier, generator=generator,
                                  gradient=gradient,
                                  surrogate=self.surrogate if gradient == "surrogate" else None,
                                  ensemble=self.config.ensemble,
                                  ensemble_rule=self.config.ensemble_rule)


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
              predictions: torch.Tensor, seconds: float,
              x_adv: torch.Tensor | None = None) -> list[Outcome]:
    return [Outcome(seed, attack, int(i), int(label), tuple(predictions[:, k].tolist()),
                    seconds / len(y), None if x_adv is None else x_adv[k])
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
        x_adv = run_attack(attack, attack_model(attack, defense, classifier, defense_gen),
                           xb, yb, attack_gen)
        predictions = predict_draws(model, x_adv, cfg.draws)
        outcomes += _outcomes(seed, attack.key(), ib, yb, predictions,
                              time.perf_counter() - began, x_adv.detach())
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
    if d.purify_size is not None:
        body += f" @{d.purify_size}px"
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
    if d.resampling == "none":
        parts.append("no resampling")
    elif d.resampling is not None or d.resample_jumps is not None:
        parts.append(f"resampling={d.resampling or 'single'}, U={d.resample_jumps or 10}")
    parts += [f"{k}={v}" for k, v in (("resample", d.resample_stage),
                                       ("mask", d.mask_normalisation),
                                       ("variance", d.ddpm_variance)) if v is not None]
    if d.mask_blocks is not None:
        parts.append(f"blocks={','.join(d.mask_blocks)}")
    return f"hetero({', '.join(parts)})"


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
    return f"{describe_defense(cfg.defense)} vs {attacks}"
