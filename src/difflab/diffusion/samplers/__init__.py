"""Samplers: one algorithm per file, all with the constructor-plus-`sample` shape."""

from .base import Denoiser, Sampler
from .ddim import DDIMSampler
from .ddpm import DDPMSampler

__all__ = ["DDIMSampler", "DDPMSampler", "Denoiser", "Sampler"]
