"""Frozen evaluation configs (pydantic), saved next to every result (DESIGN.md §2, §5)."""
from __future__ import annotations

from typing import Literal

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt,
                      ValidationError, model_validator)

from ..diffusion import SAMPLER_OPTIONS, SAMPLERS, sampler_options
from ..purifiers.diffpure import resolve_t_star


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DefenseConfig(Frozen):
    """The purifier, named exactly as ``DiffPure``'s keyword arguments and the CLI flags."""

    name: Literal["none", "diffpure"] = "none"
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
    gradient: Literal["exact", "checkpoint", "adjoint", "bpda", "surrogate", "blind"] = "exact"
    surrogate_dt: PositiveFloat | None = None   # step of the cheaper purification (surrogate)

    @model_validator(mode="after")
    def _consistent(self) -> DefenseConfig:
        if (self.gradient == "surrogate") != (self.surrogate_dt is not None):
            raise ValueError("expected surrogate_dt exactly when gradient is 'surrogate', found "
                             f"gradient={self.gradient!r}, surrogate_dt={self.surrogate_dt}")
        if self.gradient == "adjoint" and SAMPLERS[self.sampler].time == "discrete":
            raise ValueError("gradient 'adjoint' needs a continuous-time sampler (sde, ode, ld), "
                             f"found sampler {self.sampler!r}")
        resolve_t_star(self.sampler, self.t_star, self.t_star_delta)
        sampler_options(self.sampler, self.sampler_option_values())
        return self

    def sampler_option_values(self) -> dict[str, object]:
        """The sampler options as given (None = the sampler's default)."""
        return {name: getattr(self, name) for name in SAMPLER_OPTIONS}

    def purifier_kwargs(self, **overrides) -> dict[str, object]:
        """Keyword arguments of ``DiffPure`` (after the eps-model)."""
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
