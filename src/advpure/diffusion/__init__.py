"""Diffusion core: the VP and DDPM schedules, the eps-model convention, noise sources, samplers."""
from .budget import graph_budget, parse_budget
from .catalog import SAMPLER_OPTIONS, SAMPLERS, SamplerSpec
from .ddpm import ddim, ddpm
from .discrete import NOISINGS, DiscreteSchedule, discrete_levels
from .langevin import langevin_sde
from .model import EpsModel, predict_x0, score
from .noise import BatchNoise, FixedNoise, NoiseSource, PerSampleNoise, as_noise_source, uniform_like
from .samplers import (SOLVER_GRADIENTS, probability_flow_ode, reverse_sde, reverse_sde_step,
                       run_steps, time_grid)
from .schedule import VPSchedule, add_noise

__all__ = ["graph_budget", "parse_budget", "SAMPLERS", "SAMPLER_OPTIONS", "SOLVER_GRADIENTS", "BatchNoise", "DiscreteSchedule",
           "EpsModel", "FixedNoise", "NoiseSource", "PerSampleNoise", "SamplerSpec", "VPSchedule", "NOISINGS", "discrete_levels",
           "add_noise", "as_noise_source", "ddim", "ddpm", "langevin_sde", "predict_x0",
           "probability_flow_ode", "reverse_sde", "reverse_sde_step", "run_steps",
           "score", "time_grid", "uniform_like"]
