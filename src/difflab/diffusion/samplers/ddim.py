"""DDIM (Song et al. 2021): any number of steps; η=0 is deterministic, η=1 matches DDPM's variance."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ..sample_noise import NoiseSource, draw_noise
from ..schedule import NoiseSchedule
from .base import Denoiser, Sampler


class DDIMSampler(Sampler):
    """x_{t'} = √ᾱ_{t'} x̂_0 + √(1-ᾱ_{t'}-σ²) ε̂ + σ z, σ = η √((1-ᾱ_{t'})/(1-ᾱ_t)) √(1-ᾱ_t/ᾱ_{t'})."""

    def __init__(self, schedule: NoiseSchedule, *, eta: float = 0.0, **options: Any) -> None:
        if not (math.isfinite(eta) and eta >= 0):  # NaN would pass `eta < 0` and give black images
            raise ValueError(f"DDIM eta must be a finite number >= 0 (got {eta})")
        super().__init__(schedule, **options)
        self.eta = float(eta)

    def step(
        self,
        model: Denoiser,
        x: Tensor,
        t: int,
        t_prev: int,
        generator: NoiseSource = None,
        state: dict[str, Any] | None = None,
    ) -> Tensor:
        x0, eps = self._predict(model, x, t)
        a_prev = self.schedule.alpha_bar(t_prev)
        sigma = self._sigma(t, t_prev)
        x_prev = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x_prev = x_prev + sigma * draw_noise(x.shape, generator, x.device, x.dtype)
        return x_prev

    def _sigma(self, t: int, t_prev: int) -> float:
        """Standard deviation of the fresh noise added when stepping from t to t_prev."""
        if t_prev < 0 or self.eta == 0:
            return 0.0
        a_t, a_prev = self.schedule.alpha_bar(t), self.schedule.alpha_bar(t_prev)
        return self.eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
