"""DDPM ancestral sampling (Ho et al. 2020) on σ: x' ~ q(x' | x, x̂_0), generalised to any grid.

For x = x_0 + σ ε and x' = x_0 + σ' ε', the posterior is N(x̂_0 + (σ'/σ)² (x − x̂_0), σ'² (σ² − σ'²)/σ²)
("fixed_small", DDPM's β̃). "fixed_large" takes the variance of the forward step instead (DDPM's β), which on
the VE scale is (σ² − σ'²)·(α(σ)/α(σ'))² for a formulation with scale α (1 for a pure VE one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import Tensor

from ..formulations.vp import alpha
from ..sample_noise import NoiseSource, draw_noise
from ..schedule import NoiseSchedule
from .base import Sampler
from .continuous import SigmaDenoiser, SigmaSampler, denoise_at

VARIANCE_TYPES = ("fixed_small", "fixed_large")


def ve_scale(sigma: float) -> float:
    """α(σ) of a pure variance-exploding formulation: 1 at every noise level."""
    return 1.0


class DDPM(SigmaSampler):
    """The posterior step of DDPM on the core; `scale` is the formulation's α(σ) ("fixed_large" only)."""

    def __init__(
        self, variance_type: str = "fixed_small", scale: Callable[[float], float] = ve_scale
    ) -> None:
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(
                f"unknown variance_type {variance_type!r}; choose one of {', '.join(VARIANCE_TYPES)}"
            )
        self.variance_type = variance_type
        self.scale = scale

    def step(
        self,
        denoiser: SigmaDenoiser,
        x: Tensor,
        sigma: float,
        sigma_next: float,
        generator: NoiseSource = None,
        state: dict[str, Any] | None = None,
    ) -> Tensor:
        x0 = denoise_at(denoiser, x, sigma)
        x_next = x0 + (sigma_next / sigma) ** 2 * (x - x0)
        if sigma_next == 0:
            return x_next
        gap = max(sigma**2 - sigma_next**2, 0.0)
        if self.variance_type == "fixed_small":
            std = sigma_next * math.sqrt(gap) / sigma
        else:
            std = math.sqrt(gap) * self.scale(sigma) / self.scale(sigma_next)
        return x_next + std * draw_noise(x.shape, generator, x.device, x.dtype)


class DDPMSampler(Sampler):
    """Ancestral sampler over the schedule's timesteps; by default all T of them (NFE = T)."""

    default_steps = None  # every timestep of the schedule

    def __init__(
        self, schedule: NoiseSchedule, *, variance_type: str = "fixed_small", **options: Any
    ) -> None:
        super().__init__(schedule, DDPM(variance_type, scale=alpha), **options)
        self.variance_type = variance_type
