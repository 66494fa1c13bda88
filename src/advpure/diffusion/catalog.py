"""The samplers a purifier can run, by name, with their own options (data, not code paths).

Option names are the purifier's keyword arguments, the experiment-file fields and the CLI flags
(``ddim_eta`` ↔ ``--ddim-eta``); each maps to the keyword of the sampler function.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .ddpm import ddim, ddpm
from .langevin import langevin_sde
from .samplers import probability_flow_ode, reverse_sde


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler function, the time it runs in, and its options {name: (keyword, default)}."""

    run: Callable
    time: str                                     # "continuous" (VPSchedule) | "discrete"
    summary: str
    options: dict[str, tuple[str, Any]] = field(default_factory=dict)
    uses_t_star: bool = True                      # False: no forward noising (LD-SDE)


SAMPLERS: dict[str, SamplerSpec] = {
    "sde": SamplerSpec(reverse_sde, "continuous",
                       "reverse VP-SDE, Euler–Maruyama (DiffPure Eq. 4)"),
    "ode": SamplerSpec(probability_flow_ode, "continuous",
                       "probability-flow VP-ODE, Euler (DiffPure App. B.4, Eq. 28)"),
    "ld": SamplerSpec(langevin_sde, "continuous",
                      "LD-SDE, Langevin dynamics from the input (DiffPure App. B.4, Eq. 26)",
                      {"ld_sigma2": ("sigma2", 100.0), "ld_lambda": ("lam", 0.1),
                       "ld_eta": ("eta", 1.0), "ld_score_t": ("score_t", 1e-3)},
                      uses_t_star=False),
    "ddpm": SamplerSpec(ddpm, "discrete", "DDPM ancestral (Ho et al. 2020, Algorithm 2)",
                        {"ddpm_variance": ("variance", "posterior")}),
    "ddim": SamplerSpec(ddim, "discrete", "DDIM(η) (Song, Meng & Ermon 2021, Eq. 12)",
                        {"ddim_eta": ("eta", 0.0)}),
}

SAMPLER_OPTIONS: dict[str, str] = {name: sampler for sampler, spec in SAMPLERS.items()
                                   for name in spec.options}     # option -> its sampler


def sampler_options(sampler: str, given: dict[str, Any]) -> dict[str, Any]:
    """The sampler function's keywords from the purifier's options (None = default).

    An option of another sampler is an error, never silently ignored.
    """
    stray = {k: v for k, v in given.items() if v is not None and SAMPLER_OPTIONS.get(k) != sampler}
    if stray:
        owners = ", ".join(f"{k} (sampler {SAMPLER_OPTIONS.get(k, '?')!r})" for k in stray)
        raise ValueError(f"sampler {sampler!r} takes options "
                         f"{', '.join(SAMPLERS[sampler].options) or 'none'}, found {owners}")
    options = SAMPLERS[sampler].options
    return {keyword: given.get(name) if given.get(name) is not None else default
            for name, (keyword, default) in options.items()}
