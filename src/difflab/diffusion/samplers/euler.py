"""Euler (Karras et al. 2022, "EDM") on the probability-flow ODE dx/dσ = (x − D(x, σ))/σ.

Deterministic, NFE = steps; on a VP model it equals DDIM with η=0 (the same ODE, the same first-order step).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..sample_noise import NoiseSource
from ..schedule import NoiseSchedule
from .base import Sampler
from .continuous import SigmaDenoiser, SigmaSampler, denoise_at, slope


class Euler(SigmaSampler):
    """First-order Euler steps in σ on the core."""

    def step(
        self,
        denoiser: SigmaDenoiser,
        x: Tensor,
        sigma: float,
        sigma_next: float,
        generator: NoiseSource = None,
        state: dict[str, Any] | None = None,
    ) -> Tensor:
        return x + (sigma_next - sigma) * slope(x, denoise_at(denoiser, x, sigma), sigma)


class EulerSampler(Sampler):
    """Euler over the schedule's timesteps (see `Sampler` for the shared knobs)."""

    default_spacing = "trailing"

    def __init__(self, schedule: NoiseSchedule, **options: Any) -> None:
        super().__init__(schedule, Euler(), **options)
