"""The diffusion math, pure torch: schedules, the training objective, samplers and editing."""

from .objectives import DiffusionLoss
from .samplers import DDIMSampler, DDPMSampler, Denoiser, Sampler
from .schedule import PREDICTION_TYPES, NoiseSchedule
from .timesteps import make_timesteps

__all__ = [
    "PREDICTION_TYPES",
    "DDIMSampler",
    "DDPMSampler",
    "Denoiser",
    "DiffusionLoss",
    "NoiseSchedule",
    "Sampler",
    "make_timesteps",
]
