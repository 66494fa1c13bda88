"""What every purifier shares: the settings fields of the defense around it, how settings become
a module, the [0, 1] ↔ [−1, 1] mapping, and the registry entry for "no defense"."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from pydantic import (Field, PositiveFloat, PositiveInt, ValidationError, model_serializer,
                      model_validator)
from torch import nn

from ..accelerate import PRECISIONS
from ..defense import ENSEMBLE_RULES, GRADIENTS
from ..diffusion import parse_budget
from ..models.contract import require_kind
from ..settings import Named, validation_errors

DEFENSE_FIELDS = ("diffusion", "gradient", "surrogate_dt", "ensemble", "ensemble_rule",
                  "rounds", "purify_size", "memory_budget", "rows_per_pass", "precision",
                  "compile", "channels_last")    # fields of the defense around a purifier, not of its module


def to_centered(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> [−1, 1], the diffusion models' range."""
    return 2.0 * x - 1.0


def from_centered(x: torch.Tensor) -> torch.Tensor:
    """[−1, 1] states -> [0, 1] images, clamped: the clamp is part of every purifier's output
    contract (DESIGN.md §2)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


@dataclass
class Models:
    """What ``build`` makes a purifier from: the eps-model, the defended classifier, and a
    loader for other classifiers named by spec (guidance classifiers)."""

    eps: nn.Module
    classifier: nn.Module
    load_classifier: Callable[[str], nn.Module]


class DefenseSettings(Named):
    """Settings of one registered defense; ``build`` makes its purifier module (None: none)."""

    kind: ClassVar[str] = "purifier"

    def build(self, models: Models) -> nn.Module | None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class NoDefense(DefenseSettings):
    """The bare classifier."""

    name: Literal["none"] = "none"

    def build(self, models: Models) -> None:
        return None

    def describe(self) -> str:
        return "none"


class ModuleDefense(DefenseSettings):
    """A defense given as an ``nn.Module`` to ``advpure.evaluate`` in Python: the record of what
    it was (a label, and a fingerprint of its weights and of the data), never rebuilt from a
    config. Not a command-line defense (``python_only``)."""

    name: Literal["module"] = "module"
    label: str = Field(..., description="what the module is")
    fingerprint: str = Field(..., description="sha256 of the module's weights and the data")

    python_only: ClassVar[bool] = True

    def build(self, models: Models) -> None:
        raise ValueError(f"defense 'module' ({self.label}) is an nn.Module that was given to "
                         "advpure.evaluate in Python; a config cannot rebuild it: run it from "
                         "Python again (its records and reports are in its run directory)")

    def describe(self) -> str:
        return self.label


class PurifierSettings(DefenseSettings):
    """The fields every purifier's settings have: its eps-model and step, and how the defense
    around it is attacked (``gradient``) and combined (``ensemble``). A purifier's own settings
    subclass this, add their options, and implement ``build`` and ``describe_options``."""

    diffusion: str | None = Field(None, description="eps-model spec: builtin:NAME, FAMILY:PATH "
                                  "(score_sde, guided-diffusion[-fp16], diffusers, edm) or a "
                                  "checkpoint path (default: the dataset's, builtin:digits-unet "
                                  "or builtin:cifar10-unet-small)")
    dt: PositiveFloat = Field(1e-3, description="solver step (paper: 1e-3; discrete samplers: "
                              "1e-3 = every level, larger respaces)")
    gradient: Literal[GRADIENTS] = Field("exact", description="what attacks differentiate: "
                                         + " | ".join(GRADIENTS))
    surrogate_dt: PositiveFloat | None = Field(None, description="solver step of the cheaper "
                                               "purification that gradient 'surrogate' "
                                               "differentiates")
    ensemble: PositiveInt = Field(1, description="S purifications per image, outputs combined "
                                  "(Pei et al. Algorithm 3)")
    ensemble_rule: Literal[ENSEMBLE_RULES] = Field("mean", description="mean of the S outputs "
                                                   "| majority vote")
    rounds: PositiveInt = Field(1, description="multi-round purification: purify r times in a "
                                "row, each round noising the last round's output afresh")
    purify_size: PositiveInt | None = Field(None, description="purify at size×size and resize "
                                            "back (ImageNet guided diffusion: 256)")
    memory_budget: str | None = Field(None, description="checkpoint gradient: keep the graphs "
                                      "of as many solver steps as fit (6GB, 512MiB, auto) and "
                                      "recompute the others; the same gradient")
    rows_per_pass: PositiveInt | Literal["auto"] | None = Field(
        None, description="an EOT gradient's copies × images in chunks of at most this many "
        "rows (auto: as many as memory_budget holds on CUDA, measured; None: one pass)")
    precision: Literal[tuple(PRECISIONS)] = Field("fp32", description="the eps-model's and the "
                                                  "classifier's calls under autocast: fp32 | "
                                                  "bf16 | fp16 (the sampler stays float32)")
    compile: bool = Field(False, description="torch.compile the eps-model and the classifier "
                          "(eager with a warning where it fails)")
    channels_last: bool = Field(False, description="channels-last memory format for the "
                                "networks (convolutions on GPUs)")

    continuous_time: ClassVar[bool] = True     # runs a continuous-time solver (adjoint allowed)

    @model_validator(mode="after")
    def _defense_fields_fit(self):
        if (self.gradient == "surrogate") != (self.surrogate_dt is not None):
            raise ValueError("expected surrogate_dt exactly when gradient is 'surrogate', found "
                             f"gradient={self.gradient!r}, surrogate_dt={self.surrogate_dt}")
        if self.memory_budget is not None:
            if self.gradient != "checkpoint":
                raise ValueError(f"memory_budget applies to gradient 'checkpoint', found "
                                 f"gradient={self.gradient!r}")
            parse_budget(self.memory_budget)            # a readable budget, or the error
        span = self.time_span()
        if span is not None and self.dt > span + 1e-12:
            raise ValueError(f"dt: expected at most {span:g}, the time the solver crosses "
                             f"({self.span_name}), found {self.dt:g} — it would run one step "
                             f"of {span:g}, not of {self.dt:g}: lower --dt")
        if self.gradient == "adjoint" and not self.runs_continuous_time():
            raise ValueError(f"gradient 'adjoint' needs a continuous-time solver; "
                             f"{self.label()} runs discrete steps: use 'exact' or 'checkpoint'")
        return self

    span_name: ClassVar[str] = "t*"

    def time_span(self) -> float | None:
        """The shortest stretch of time the solver crosses in steps of ``dt`` (None: no limit)."""
        return getattr(self, "t_star", None)

    def runs_continuous_time(self) -> bool:
        return self.continuous_time

    def unused_options(self) -> set[str]:
        """Options the other settings make meaningless (DiffPure's other samplers' options,
        AGDM's DDPM options in its continuous form): given, they are an error (each purifier's
        validator says why); dumped, they are left out, so that a config round-trips."""
        return set()

    @model_serializer(mode="wrap")
    def _without_unused_options(self, handler):
        return {k: v for k, v in handler(self).items() if k not in self.unused_options()}

    def label(self) -> str:
        """The name the description starts with (DiffPure adds its sampler)."""
        return self.name

    def module_options(self) -> dict[str, Any]:
        """The options of the purifier module (the fields of the defense around it left out)."""
        return {f: getattr(self, f) for f in type(self).model_fields
                if f != "name" and f not in DEFENSE_FIELDS}

    def describe_options(self) -> list[str]:
        """'t*=0.1', 'dt=0.01', …: what the label shows of the purifier's own options."""
        raise NotImplementedError

    def describe(self) -> str:
        """'diffpure-ddim(t*=0.1±0.02, dt=0.01, ddim_eta=0.5) ×4 mean [checkpoint gradient]'."""
        body = f"{self.label()}({', '.join(self.describe_options())})"
        if self.rounds > 1:
            body += f" {self.rounds} rounds"
        if self.ensemble > 1:
            body += f" ×{self.ensemble} {self.ensemble_rule}"
        if self.purify_size is not None:
            body += f" @{self.purify_size}px"
        if self.precision != "fp32":
            body += f" {self.precision}"
        if self.gradient == "exact":
            return body
        budget = f", keeps {self.memory_budget}" if self.memory_budget is not None else ""
        return f"{body} [{self.gradient} gradient{budget}]"


def module_settings(kind: type[PurifierSettings], settings: PurifierSettings | None,
                    options: dict[str, Any]) -> PurifierSettings:
    """A purifier module's settings: ``settings``, or ``kind`` validated from the module's
    keyword ``options`` (the fields of the defense around it are not module options)."""
    if settings is not None:
        if options:
            raise TypeError(f"{kind.__name__}: expected settings or keyword options, found both")
        if not isinstance(settings, kind):
            raise TypeError(f"expected {kind.__name__}, found {type(settings).__name__}")
        return settings
    defense_level = sorted(set(options) & set(DEFENSE_FIELDS))
    if defense_level:
        raise TypeError(f"{', '.join(defense_level)}: options of the defense around the "
                        "purifier (PurifiedClassifier, the evaluation config), not of the purifier")
    try:
        return kind(**options)
    except ValidationError as err:
        raise ValueError(f"{kind.__name__}: {validation_errors(err)}") from None


def check_models(owner: str, eps_model: nn.Module, classifier: nn.Module | None = None) -> None:
    """Refuse a loaded classifier where the eps-model goes, and the other way round."""
    require_kind(eps_model, "diffusion", f"{owner}: the eps-model (first argument)")
    if classifier is not None:
        require_kind(classifier, "classifier", f"{owner}: the classifier")
