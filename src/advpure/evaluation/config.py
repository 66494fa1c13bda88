"""Frozen evaluation configs (pydantic), saved next to every result (DESIGN.md §2, §5)."""
from __future__ import annotations

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
                 "ensemble_rule")
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


class AttackConfig(Frozen):
    name: Literal["none", "pgd"] = "none"
    eps: PositiveFloat = 8 / 255
    norm: Literal["linf", "l2"] = "linf"
    steps: PositiveInt = 20
    step_size: PositiveFloat | None = None      # default 2.5·eps/steps
    eot: PositiveInt = 1                        # EOT copies per gradient
    random_init: bool = True


class EvalConfig(Frozen):
    dataset: Literal["digits", "cifar10", "cifar100"] = "digits"
    data_root: str | None = None
    split: Literal["train", "test"] = "test"
    n: PositiveInt = 128                        # fixed random subset size
    subset_seed: int = 0
    classifier: str = "builtin:digits-cnn"
    defense: DefenseConfig = DefenseConfig()
    attack: AttackConfig = AttackConfig()
    seeds: tuple[int, ...] = Field((0,), min_length=1)
    batch_size: PositiveInt = 128

    @model_validator(mode="after")
    def _guidance_fits_the_data(self) -> EvalConfig:
        d = self.defense
        if d.name == "agdm" and d.guidance_classifier is None and self.dataset != "digits":
            raise ValueError(f"AGDM on {self.dataset} needs a robust guidance classifier φ: give "
                             "--guidance-classifier SPEC (train one with `advpure train "
                             "guidance`); the default builtin:digits-guidance is for digits")
        return self


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
    fields.update({f: (None, f) for f in EvalConfig.model_fields if f not in ("defense", "attack")})
    return fields


def config_from_flat(values: dict[str, object], base: dict | None = None) -> EvalConfig:
    """An ``EvalConfig`` from flat options (None = keep), on top of ``base`` (an experiment
    file's content); raises pydantic's ``ValidationError`` (see ``config_errors``)."""
    nested = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (base or {}).items()}
    fields = flat_fields()
    for name, value in values.items():
        if value is None:
            continue
        section, field = fields[name]
        target = nested if section is None else nested.setdefault(section, {})
        target[field] = value
    return EvalConfig.model_validate(nested)
