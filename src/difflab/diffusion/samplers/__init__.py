"""Samplers: one algorithm per file, written once on the continuous core (continuous.py: D(x, σ) on σ grids),
each with one `step`, plus its integer-timestep face (the constructor-plus-`sample` shape of base.py)."""

from .base import Denoiser, Sampler
from .continuous import SigmaDenoiser, SigmaSampler
from .ddim import DDIM, DDIMSampler
from .ddpm import DDPM, DDPMSampler
from .dpm_solver import DPMSolverPP, DPMSolverSampler
from .euler import Euler, EulerSampler
from .heun import Heun, HeunSampler

__all__ = [
    "DDIM",
    "DDPM",
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverPP",
    "DPMSolverSampler",
    "Denoiser",
    "Euler",
    "EulerSampler",
    "Heun",
    "HeunSampler",
    "Sampler",
    "SigmaDenoiser",
    "SigmaSampler",
]
