"""DDIM (Song et al. 2021): any number of steps; η=0 is deterministic, η=1 matches DDPM's variance."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..schedule import NoiseSchedule
from .base import Denoiser, Sampler, draw_noise


class DDIMSampler(Sampler):
    """x_{t'} = √ᾱ_{t'} x̂_0 + √(1-ᾱ_{t'}-σ²) ε̂ + σ z, σ = η √((1-ᾱ_{t'})/(1-ᾱ_t)) √(1-ᾱ_t/ᾱ_{t'})."""

    def __init__(
        self,
        schedule: NoiseSchedule,
        steps: int | None = 50,
        eta: float = 0.0,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "leading",
        clip_x0: float | None = None,
    ) -> None:
        if eta < 0:
            raise ValueError(f"DDIM eta must be >= 0 (got {eta})")
        super().__init__(schedule, steps, prediction_type, timestep_spacing, clip_x0)
        self.eta = float(eta)

    def sigma(self, t: int, t_prev: int) -> float:
        """Standard deviation of the fresh noise added when stepping from t to t_prev."""
        if t_prev < 0 or self.eta == 0:
            return 0.0
        a_t, a_prev = self.schedule.alpha_bar(t), self.schedule.alpha_bar(t_prev)
        return self.eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))

    def step(
        self, x0: Tensor, eps: Tensor, t: int, t_prev: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """One DDIM update from x_t to x_{t_prev} given (x̂_0, ε̂)."""
        a_prev = self.schedule.alpha_bar(t_prev)
        sigma = self.sigma(t, t_prev)
        x_prev = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x_prev = x_prev + sigma * draw_noise(x0.shape, generator, x0.device, x0.dtype)
        return x_prev

    def advance(
        self, model: Denoiser, x: Tensor, t: int, t_prev: int, generator: torch.Generator | None, state: dict
    ) -> Tensor:
        x0, eps = self.predict(model, x, t)
        return self.step(x0, eps, t, t_prev, generator)
