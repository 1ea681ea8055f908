"""DDIM (Song et al. 2021) on σ: x' = x̂_0 + σ_down ε̂ + σ_up z; η=0 is deterministic, η=1 is DDPM's posterior.

In VE terms σ_up = η σ' √(σ² − σ'²)/σ and σ_down = √(max(σ'² − σ_up², 0)) (k-diffusion's `get_ancestral_step`,
which also caps σ_up at σ' for η > 1; its sample_euler_ancestral is this step).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ..sample_noise import NoiseSource, draw_noise
from ..schedule import NoiseSchedule
from .base import Sampler
from .continuous import SigmaDenoiser, SigmaSampler, denoise_at, slope


class DDIM(SigmaSampler):
    """DDIM with stochasticity η ≥ 0 on the core."""

    def __init__(self, eta: float = 0.0) -> None:
        if not (math.isfinite(eta) and eta >= 0):  # NaN would pass `eta < 0` and give black images
            raise ValueError(f"DDIM eta must be a finite number >= 0 (got {eta})")
        self.eta = float(eta)

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
        up = self.eta * sigma_next * math.sqrt(max(sigma**2 - sigma_next**2, 0.0)) / sigma
        down = math.sqrt(max(sigma_next**2 - up**2, 0.0))
        x_next = x0 + down * slope(x, x0, sigma)
        if up > 0:
            x_next = x_next + up * draw_noise(x.shape, generator, x.device, x.dtype)
        return x_next


class DDIMSampler(Sampler):
    """DDIM over the schedule's timesteps (see `Sampler` for the shared knobs)."""

    def __init__(self, schedule: NoiseSchedule, *, eta: float = 0.0, **options: Any) -> None:
        super().__init__(schedule, DDIM(eta), **options)
        self.eta = self.core.eta
