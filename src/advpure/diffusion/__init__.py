"""Diffusion core: the VP schedule, the eps-model convention, noise sources, samplers."""
from .model import EpsModel, predict_x0, score
from .noise import FixedNoise, NoiseSource, PerSampleNoise, as_noise_source
from .samplers import (SAMPLERS, SOLVER_GRADIENTS, probability_flow_ode, reverse_sde,
                       reverse_sde_step, run_steps, time_grid)
from .schedule import VPSchedule, add_noise

__all__ = ["SAMPLERS", "probability_flow_ode", "SOLVER_GRADIENTS", "reverse_sde_step", "run_steps", "EpsModel", "FixedNoise", "NoiseSource", "PerSampleNoise", "VPSchedule",
           "add_noise", "as_noise_source", "predict_x0", "reverse_sde", "score", "time_grid"]
