"""The diffusion math, pure torch: schedules, the training objective, samplers and editing.

Samplers are written once on a continuous core (samplers/continuous.py: a denoiser D(x, σ) → x̂_0 on σ grids);
DDPMSampler, DDIMSampler, … are its integer-timestep face for the VP formulation (formulations/vp.py)."""

from .editing import img2img, repaint
from .formulations import VP
from .objectives import DiffusionLoss
from .sample_noise import SampleGenerators
from .samplers import (
    DDIM,
    DDPM,
    DDIMSampler,
    DDPMSampler,
    Denoiser,
    DPMSolverPP,
    DPMSolverSampler,
    Euler,
    EulerSampler,
    Heun,
    HeunSampler,
    Sampler,
    SigmaDenoiser,
    SigmaSampler,
)
from .schedule import PREDICTION_TYPES, NoiseSchedule
from .sigmas import karras_sigmas
from .timesteps import make_timesteps

__all__ = [
    "DDIM",
    "DDPM",
    "PREDICTION_TYPES",
    "VP",
    "DPMSolverPP",
    "Euler",
    "Heun",
    "SigmaDenoiser",
    "SigmaSampler",
    "karras_sigmas",
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
