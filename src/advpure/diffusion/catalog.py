"""The samplers a purifier can run, by name, with their own options (data, not code paths).

Option names are the purifier's keyword arguments, the experiment-file fields and the CLI flags
(``ddim_eta`` ↔ ``--ddim-eta``); each maps to the keyword of the sampler function.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .ddpm import ddim, ddpm
from .langevin import langevin_sde
from .samplers import probability_flow_ode, reverse_sde


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler function, the time it runs in, and its options {purifier option: the
    function's keyword, or None for an option of the purifier's forward noising}; the options'
    defaults and descriptions live in ``DiffPureSettings``."""

    run: Callable
    time: str                                     # "continuous" (VPSchedule) | "discrete"
    summary: str
    options: dict[str, str | None] = field(default_factory=dict)
    uses_t_star: bool = True                      # False: no forward noising (LD-SDE)


SAMPLERS: dict[str, SamplerSpec] = {
    "sde": SamplerSpec(reverse_sde, "continuous",
                       "reverse VP-SDE, Euler–Maruyama (DiffPure Eq. 4)",
                       {"t_end": "t_end", "grid": "grid", "noising": None}),
    "ode": SamplerSpec(probability_flow_ode, "continuous",
                       "probability-flow VP-ODE, Euler (DiffPure App. B.4, Eq. 28)",
                       {"t_end": "t_end", "grid": "grid", "noising": None}),
    "ld": SamplerSpec(langevin_sde, "continuous",
                      "LD-SDE, Langevin dynamics from the input (DiffPure App. B.4, Eq. 26)",
                      {"ld_sigma2": "sigma2", "ld_lambda": "lam", "ld_eta": "eta",
                       "ld_score_t": "score_t", "ld_span": "span", "t_end": "t_end",
                       "grid": "grid"}, uses_t_star=False),
    "ddpm": SamplerSpec(ddpm, "discrete", "DDPM ancestral (Ho et al. 2020, Algorithm 2)",
                        {"ddpm_variance": "variance", "clip_denoised": "clip_denoised"}),
    "ddim": SamplerSpec(ddim, "discrete", "DDIM(η) (Song, Meng & Ermon 2021, Eq. 12)",
                        {"ddim_eta": "eta"}),
}

SAMPLER_OPTIONS: dict[str, tuple[str, ...]] = {                 # option -> the samplers taking it
    name: tuple(s for s, spec in SAMPLERS.items() if name in spec.options)
    for name in dict.fromkeys(n for spec in SAMPLERS.values() for n in spec.options)}
