"""The diffusion math, pure torch: schedules, the training objective, samplers and editing."""

from .editing import img2img, repaint
from .objectives import DiffusionLoss
from .sample_noise import SampleGenerators
from .samplers import DDIMSampler, DDPMSampler, Denoiser, DPMSolverSampler, EulerSampler, HeunSampler, Sampler
from .schedule import PREDICTION_TYPES, NoiseSchedule
from .timesteps import make_timesteps

__all__ = [
    "PREDICTION_TYPES",
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverSampler",
    "EulerSampler",
    "HeunSampler",
    "Denoiser",
    "DiffusionLoss",
    "NoiseSchedule",
    "SampleGenerators",
    "Sampler",
    "img2img",
    "make_timesteps",
    "repaint",
]
