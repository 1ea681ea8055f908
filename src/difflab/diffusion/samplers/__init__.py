"""Samplers: one algorithm per file, all with the constructor-plus-`sample` shape and one `step`."""

from .base import Denoiser, Sampler
from .ddim import DDIMSampler
from .ddpm import DDPMSampler
from .dpm_solver import DPMSolverSampler
from .euler import EulerSampler
from .heun import HeunSampler

__all__ = [
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverSampler",
    "Denoiser",
    "EulerSampler",
    "HeunSampler",
    "Sampler",
]
