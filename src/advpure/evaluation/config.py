"""Frozen evaluation configs (pydantic), saved next to every result (DESIGN.md §2, §5)."""
from __future__ import annotations

from typing import Literal

from pydantic import (BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError,
                      model_validator)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DefenseConfig(Frozen):
    name: Literal["none", "diffpure"] = "none"
    diffusion: str = "builtin:digits-unet"      # eps-model spec
    t_star: float = Field(0.1, gt=0.0, le=1.0)  # DiffPure diffusion time
    dt: PositiveFloat = 1e-3                    # reverse-SDE step (paper: 1e-3)
    sampler: Literal["sde", "ode"] = "sde"      # reverse VP-SDE or probability-flow VP-ODE
    gradient: Literal["exact", "checkpoint", "adjoint", "bpda", "surrogate", "blind"] = "exact"
    surrogate_dt: PositiveFloat | None = None   # step of the cheaper purification (surrogate)

    @model_validator(mode="after")
    def _surrogate_needs_its_step(self) -> DefenseConfig:
        if (self.gradient == "surrogate") != (self.surrogate_dt is not None):
            raise ValueError("expected surrogate_dt exactly when gradient is 'surrogate', found "
                             f"gradient={self.gradient!r}, surrogate_dt={self.surrogate_dt}")
        return self


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
    """One line per invalid field: 'defense.name: expected 'none' or 'diffpure', found 'magic''."""
    lines = []
    for e in err.errors():
        where = ".".join(str(part) for part in e["loc"])
        expected = e["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
        lines.append(f"{where}: expected {expected}, found {e.get('input')!r}")
    return "; ".join(lines)
