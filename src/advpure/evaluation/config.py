"""Frozen evaluation configs (pydantic), saved next to every result (DESIGN.md §2, §5)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt,
                      ValidationError, model_validator)

from ..diffusion import SAMPLER_OPTIONS, SAMPLERS, sampler_options
from ..purifiers import coup_settings
from ..purifiers.agdm import agdm_t_star
from ..purifiers.diffpure import resolve_t_star
from ..purifiers.hetero import hetero_times


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


COMMON_FIELDS = ("name", "diffusion", "dt", "gradient", "surrogate_dt", "ensemble",
                 "ensemble_rule", "purify_size")
GUIDANCE_FIELDS = ("guidance_scale", "guidance_grad", "guidance_classifier")
PURIFIER_FIELDS: dict[str, tuple[str, ...]] = {     # each purifier's own options (beyond common)
    "diffpure": ("t_star", "sampler", "t_star_delta", *SAMPLER_OPTIONS),
    "coup": ("t_star", *GUIDANCE_FIELDS, "forward_noise", "preset"),
    "agdm": ("t_star", *GUIDANCE_FIELDS, "form", "guidance_distance", "guidance_label",
             "ddpm_variance"),
    "hetero": ("t_large", "t_small", "tau", "mask_blocks", "mask_normalisation", "resampling",
               "resample_jumps", "resample_stage", "ddpm_variance"),
}
AGDM_DEFAULT_GUIDANCE = "builtin:digits-guidance"   # φ of the embedded default


class DefenseConfig(Frozen):
    """The purifier, its fields named exactly as the purifiers' keyword arguments and the CLI
    flags. Options of another purifier than ``name`` are errors, never silently ignored."""

    name: Literal["none", "diffpure", "coup", "agdm", "hetero"] = "none"
    diffusion: str = "builtin:digits-unet"      # eps-model spec
    sampler: Literal["sde", "ode", "ld", "ddpm", "ddim"] = "sde"
    t_star: float | None = Field(None, gt=0.0, le=1.0)   # diffusion time; None: 0.1 (ld: none)
    t_star_delta: NonNegativeFloat = 0.0        # randomized t* ∈ [t* − Δ, t* + Δ] (App. C.4)
    dt: PositiveFloat = 1e-3                    # solver step (paper: 1e-3; discrete: 1e-3 = 1 level)
    ddpm_variance: Literal["posterior", "beta"] | None = None   # ddpm: β̃ (default) or β
    ddim_eta: NonNegativeFloat | None = None    # ddim: η (default 0)
    ld_sigma2: PositiveFloat | None = None      # ld: σ² (default 100)
    ld_lambda: PositiveFloat | None = None      # ld: λ (default 0.1)
    ld_eta: NonNegativeFloat | None = None      # ld: η (default 1)
    ld_score_t: PositiveFloat | None = None     # ld: time of the score "at 0" (default 1e-3)
    guidance_scale: NonNegativeFloat | None = None   # coup λ / agdm s (default 1; 0 = unguided)
    guidance_grad: Literal["second_order", "first_order"] | None = None  # attack gradient
    guidance_classifier: str | None = None      # coup: default the defended one; agdm: φ
    guidance_distance: Literal["kl", "reverse_kl", "l2"] | None = None   # agdm: D (default kl)
    guidance_label: Literal["input", "state"] | None = None   # agdm: ŷ from φ(x') or φ(x_t)
    form: Literal["discrete", "continuous"] | None = None   # agdm: Algorithm 1 | Eq. 18 SDE
    forward_noise: bool | None = None           # coup: DiffPure's forward noising first (off)
    preset: Literal["linf", "l2"] | None = None  # coup: the paper's t*, λ (linf 0.1, l2 0.075)
    t_large: float | None = Field(None, gt=0.0, le=1.0)   # hetero: t_l inside the mask (0.2)
    t_small: float | None = Field(None, gt=0.0, le=1.0)   # hetero: t_s outside it (0.05)
    tau: float | None = Field(None, ge=0.0, lt=1.0)       # hetero: mask threshold τ (0.8)
    mask_blocks: tuple[str, ...] | None = None  # hetero: classifier modules of the mask
    mask_normalisation: Literal["minmax", "softmax"] | None = None   # hetero: minmax (default)
    resampling: Literal["single", "repaint", "none"] | None = None   # hetero: single (Eq. 11)
    resample_jumps: PositiveInt | None = None   # hetero: U (default 10)
    resample_stage: Literal["stage1", "all"] | None = None   # hetero: where to resample
    gradient: Literal["exact", "checkpoint", "adjoint", "bpda", "surrogate", "blind"] = "exact"
    surrogate_dt: PositiveFloat | None = None   # step of the cheaper purification (surrogate)
    ensemble: PositiveInt = 1                   # S purifications per image (Pei et al. Alg. 3)
    ensemble_rule: Literal["mean", "vote"] = "mean"   # mean of the S outputs, or majority vote
    purify_size: PositiveInt | None = None      # purify at size×size (ImageNet guided diffusion: 256)

    @model_validator(mode="after")
    def _consistent(self) -> DefenseConfig:
        if (self.gradient == "surrogate") != (self.surrogate_dt is not None):
            raise ValueError("expected surrogate_dt exactly when gradient is 'surrogate', found "
                             f"gradient={self.gradient!r}, surrogate_dt={self.surrogate_dt}")
        if self.name == "none":
            return self
        self._only_own_options()
        if self.name == "coup":
            coup_settings(self.t_star, self.guidance_scale, self.preset)
            return self
        if self.name == "hetero":
            hetero_times(self.t_large, self.t_small)
            if self.gradient == "adjoint":
                raise ValueError("gradient 'adjoint' needs a continuous-time sampler; hetero "
                                 "runs DDPM steps: use 'exact' or 'checkpoint'")
            return self
        if self.name == "agdm":
            agdm_t_star(self.t_star)
            if self.gradient == "adjoint" and self.form != "continuous":
                raise ValueError("gradient 'adjoint' needs AGDM's continuous form (form="
                                 f"'continuous'), found form={self.form or 'discrete'!r}")
            return self
        if self.gradient == "adjoint" and SAMPLERS[self.sampler].time == "discrete":
            raise ValueError("gradient 'adjoint' needs a continuous-time sampler (sde, ode, ld), "
                             f"found sampler {self.sampler!r}")
        resolve_t_star(self.sampler, self.t_star, self.t_star_delta)
        sampler_options(self.sampler, self.sampler_option_values())
        return self

    def _only_own_options(self) -> None:
        own = set(COMMON_FIELDS) | set(PURIFIER_FIELDS[self.name])
        defaults = DefenseConfig.model_fields
        stray = [f"{f}={getattr(self, f)!r}" for f in defaults
                 if f not in own and getattr(self, f) != defaults[f].default]
        if stray:
            raise ValueError(f"purifier {self.name!r} takes no option {', '.join(stray)} (options: "
                             f"{', '.join(f for f in PURIFIER_FIELDS[self.name])})")

    def sampler_option_values(self) -> dict[str, object]:
        """The sampler options as given (None = the sampler's default)."""
        return {name: getattr(self, name) for name in SAMPLER_OPTIONS}

    def purifier_kwargs(self, **overrides) -> dict[str, object]:
        """Keyword arguments of the purifier (after the eps-model and, for COUP, the guidance
        classifier); options left at None take the purifier's own defaults."""
        if self.name in ("coup", "agdm", "hetero"):
            own = {f: getattr(self, f) for f in PURIFIER_FIELDS[self.name]
                   if f != "guidance_classifier"}
            given = dict(dt=self.dt, **own)
            return {k: v for k, v in given.items() if v is not None} | overrides
        return dict(t_star=self.t_star, dt=self.dt, sampler=self.sampler,
                    t_star_delta=self.t_star_delta, **self.sampler_option_values()) | overrides


ATTACK_FIELDS: dict[str, tuple[str, ...]] = {   # each attack's options (all take eps, norm)
    "none": (),
    "pgd": ("steps", "step_size", "eot", "random_init"),
    "bpda": ("steps", "step_size", "eot", "random_init"),
    "transfer": ("steps", "step_size", "random_init"),
    "diffusion": ("steps", "step_size", "eot", "random_init"),
    "apgd": ("steps", "eot", "loss"),
    "autoattack": ("steps", "eot", "version", "queries"),
    "square": ("queries",),
    "stadv": ("steps", "eot", "bound", "lr"),
}


class AttackConfig(Frozen):
    """One attack on the defended model, its fields named as the attack functions' arguments.

    pgd: PGD+EOT through the defense's gradient mode; bpda: the same with the purifier's
    gradient replaced by the identity; transfer: PGD on the bare classifier, evaluated on the
    defense; diffusion: PGD on ‖purify(x') − x‖² (the classifier never consulted); apgd:
    advpure's batched-EOT APGD; autoattack: the official AutoAttack (standard | rand);
    square: the official Square Attack; stadv: a flow field of bounded components."""

    name: Literal["none", "pgd", "bpda", "transfer", "diffusion", "apgd", "autoattack",
                  "square", "stadv"] = "none"
    eps: PositiveFloat = 8 / 255                # ℓp budget (stadv: unused, see bound)
    norm: Literal["linf", "l2"] = "linf"
    steps: PositiveInt = 20                     # iterations
    step_size: PositiveFloat | None = None      # pgd-style: default 2.5·eps/steps
    eot: PositiveInt | None = None              # EOT copies per gradient: 1 (autoattack rand: 20)
    random_init: bool = True
    loss: Literal["ce", "dlr"] | None = None    # apgd: ce (default) | dlr
    version: Literal["standard", "rand"] | None = None   # autoattack: standard (default) | rand
    queries: PositiveInt | None = None          # square (and autoattack's Square): 5000
    bound: PositiveFloat | None = None          # stadv: flow bound (default 0.05)
    lr: PositiveFloat | None = None             # stadv: Adam learning rate (default 0.01)

    @model_validator(mode="after")
    def _own_options(self) -> AttackConfig:
        own = set(ATTACK_FIELDS[self.name]) | {"name", "eps", "norm"}
        defaults = AttackConfig.model_fields
        stray = [f"{f}={getattr(self, f)!r}" for f in defaults
                 if f not in own and getattr(self, f) != defaults[f].default]
        if stray and self.name != "none":
            raise ValueError(f"attack {self.name!r} takes no option {', '.join(stray)} "
                             f"(options: eps, norm, {', '.join(ATTACK_FIELDS[self.name])})")
        if self.name == "autoattack" and self.version != "rand" and self.eot not in (None, 1):
            raise ValueError("AutoAttack's standard version has no EOT; use version='rand'")
        return self

    def eot_copies(self) -> int:
        """The EOT count in effect: ``eot``, or 20 for AutoAttack rand and 1 otherwise."""
        if self.eot is not None:
            return self.eot
        return 20 if self.name == "autoattack" and self.version == "rand" else 1

    def key(self) -> str:
        """A short label, unique per setting: 'pgd-linf(eps=0.2, 20 steps, EOT 4)'."""
        if self.name == "none":
            return "none"
        budget = f"bound={self.bound or 0.05:g}" if self.name == "stadv" else \
            f"eps={self.eps:.3g}"
        parts = [budget]
        if self.name == "autoattack":
            parts.insert(0, self.version or "standard")
        if self.name == "apgd":
            parts.insert(0, self.loss or "ce")
        if "steps" in ATTACK_FIELDS[self.name]:
            parts.append(f"{self.steps} steps")
        if self.step_size is not None:
            parts.append(f"step {self.step_size:.3g}")
        eot = self.eot_copies()
        if "eot" in ATTACK_FIELDS[self.name] and (eot > 1 or self.name in ("pgd", "bpda")):
            parts.append(f"EOT {eot}")
        if self.queries is not None:
            parts.append(f"{self.queries} queries")
        if self.name == "stadv" and self.lr is not None:
            parts.append(f"lr {self.lr:g}")
        if "random_init" in ATTACK_FIELDS[self.name] and not self.random_init:
            parts.append("no random start")
        norm = "" if self.name == "stadv" else f"-{self.norm}"
        return f"{self.name}{norm}({', '.join(parts)})"


class EvalConfig(Frozen):
    """An evaluation: data, classifier, defense, the attacks (given, or a paper's ``protocol``
    with optional caps), seeds and the number of purification draws per final evaluation.

    The single-attack form ``attack: {...}`` (the CLI's ``--attack`` flags, older run files) is
    read as ``attacks: [{...}]``."""

    dataset: Literal["digits", "cifar10", "cifar100", "svhn", "imagenet"] = "digits"
    data_root: str | None = None
    split: Literal["train", "test"] = "test"
    n: PositiveInt = 512                        # robust accuracy: fixed random subset (≤ split)
    standard_n: PositiveInt | None = None       # standard accuracy: None = the whole split
    subset_seed: int = 0
    classifier: str = "builtin:digits-cnn"
    defense: DefenseConfig = DefenseConfig()
    defenses: tuple[DefenseConfig, ...] = ()    # the rows of `advpure table` (files only)
    attacks: tuple[AttackConfig, ...] = ()
    protocol: Literal["diffpure", "diffpure-l2", "diffpure-stadv", "coup", "agdm", "leekim",
                      "pei"] | None = None     # a paper's preset attacks (``protocols.py``)
    max_steps: PositiveInt | None = None        # caps on the protocol's budgets
    max_eot: PositiveInt | None = None
    max_queries: PositiveInt | None = None
    draws: PositiveInt = 1                      # purification draws per final evaluation
    save_adversarial: bool = False              # keep adversarial images in the record store
    note: str | None = None                     # shown first in every report and table
    seeds: tuple[int, ...] = Field((0,), min_length=1)
    batch_size: PositiveInt = 128

    @model_validator(mode="before")
    @classmethod
    def _single_attack(cls, data):
        if not isinstance(data, dict) or "attack" not in data:
            return data
        data = dict(data)
        attack = data.pop("attack")
        if data.get("attacks"):
            raise ValueError("expected either 'attack' (one attack) or 'attacks' (a list), "
                             "found both")
        name = attack.get("name", "none") if isinstance(attack, dict) else attack.name
        data["attacks"] = () if name == "none" else (attack,)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> EvalConfig:
        d = self.defense
        if d.name == "agdm" and d.guidance_classifier is None and self.dataset != "digits":
            raise ValueError(f"AGDM on {self.dataset} needs a robust guidance classifier φ: give "
                             "--guidance-classifier SPEC (train one with `advpure train "
                             "guidance`); the default builtin:digits-guidance is for digits")
        if self.standard_n is not None and self.standard_n < self.n:
            raise ValueError(f"expected standard_n >= n (the robust subset is part of the "
                             f"standard one), found standard_n={self.standard_n}, n={self.n}")
        if self.protocol is not None and self.attacks:
            raise ValueError(f"expected either a protocol or attacks, found protocol "
                             f"{self.protocol!r} and {len(self.attacks)} attack(s)")
        caps = [f for f in ("max_steps", "max_eot", "max_queries") if getattr(self, f)]
        if caps and self.protocol is None:
            raise ValueError(f"{', '.join(caps)} cap a protocol's budgets; found no protocol "
                             "(set the attack's own steps/eot instead)")
        if d.name == "none" and any(a.name == "diffusion" for a in self.attacks):
            raise ValueError("the diffusion-only attack needs a purifier; found defense 'none'")
        return self

    def resolved_attacks(self) -> list[AttackConfig]:
        """The attacks to run: the given ones, or the protocol's with the caps applied."""
        if self.protocol is None:
            return list(self.attacks)
        from .protocols import capped, protocol_attacks

        return [capped(a, self.max_steps, self.max_eot, self.max_queries)
                for a in protocol_attacks(self.protocol, self.dataset)]

    def budget_reductions(self) -> list[str]:
        """What this run used less of than its protocol (empty without one)."""
        if self.protocol is None:
            return []
        from .protocols import protocol_attacks, reductions

        return reductions(protocol_attacks(self.protocol, self.dataset), self.resolved_attacks())


def config_errors(err: ValidationError) -> str:
    """One line per invalid field: 'defense.name: expected 'none' or 'diffpure', found 'magic''.

    Errors of a whole section (its fields do not fit together) keep their own message.
    """
    lines = []
    for e in err.errors():
        where = ".".join(str(part) for part in e["loc"])
        if e["type"] == "value_error":
            message = e["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message}" if where else message)
            continue
        expected = e["msg"].removeprefix("Input should be ")
        lines.append(f"{where}: expected {expected}, found {e.get('input')!r}")
    return "; ".join(lines)


def flat_fields() -> dict[str, tuple[str | None, str]]:
    """Flat option name -> (section, field): 'ddim_eta' -> ('defense', 'ddim_eta'), 'defense' ->
    ('defense', 'name'), 'n' -> (None, 'n'). The CLI flags are these names with dashes."""
    fields: dict[str, tuple[str | None, str]] = {}
    for section, model in (("defense", DefenseConfig), ("attack", AttackConfig)):
        fields[section] = (section, "name")
        fields.update({f: (section, f) for f in model.model_fields if f != "name"})
    fields.update({f: (None, f) for f in EvalConfig.model_fields
                   if f not in ("defense", "attacks", "defenses")})     # lists: files only
    return fields


def read_experiment_file(path: Path) -> dict:
    """The content of a YAML (.yaml, .yml) or JSON experiment file, as a dict; a ValueError
    names the file and what is wrong with it (validation happens in ``config_from_flat``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"expected an experiment file, found no file {path}")
    text = path.read_text()
    try:
        content = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                         f"{err}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a mapping of fields (dataset, defense, attacks or "
                         f"protocol, seeds, …), found {type(content).__name__}")
    return content


def config_from_flat(values: dict[str, object], base: dict | None = None) -> EvalConfig:
    """An ``EvalConfig`` from flat options (None = keep), on top of ``base`` (an experiment
    file's content); raises pydantic's ``ValidationError`` (see ``config_errors``)."""
    nested = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (base or {}).items()}
    fields = flat_fields()
    attack_flags = [n for n, v in values.items() if v is not None and fields[n][0] == "attack"]
    if attack_flags and nested.get("attacks"):
        if len(nested["attacks"]) != 1:
            raise ValueError(f"the experiment file lists {len(nested['attacks'])} attacks; "
                             f"flags such as --{attack_flags[0].replace('_', '-')} change one "
                             "attack: edit the file instead")
        nested["attack"] = dict(nested.pop("attacks")[0])
    for name, value in values.items():
        if value is None:
            continue
        section, field = fields[name]
        target = nested if section is None else nested.setdefault(section, {})
        target[field] = value
    return EvalConfig.model_validate(nested)
