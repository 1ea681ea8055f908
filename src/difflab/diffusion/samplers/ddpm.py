"""DDPM ancestral sampling (Ho et al. 2020), generalised to any subsequence of timesteps."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ..sample_noise import NoiseSource, draw_noise
from ..schedule import NoiseSchedule
from .base import Denoiser, Sampler

VARIANCE_TYPES = ("fixed_small", "fixed_large")


class DDPMSampler(Sampler):
    """Ancestral sampler x_{t-1} ~ q(x_{t-1} | x_t, x̂_0); by default over all T steps (NFE = T)."""

    default_steps = None  # every timestep of the schedule

    def __init__(
        self, schedule: NoiseSchedule, *, variance_type: str = "fixed_small", **options: Any
    ) -> None:
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(
                f"unknown variance_type {variance_type!r}; choose one of {', '.join(VARIANCE_TYPES)}"
            )
        super().__init__(schedule, **options)
        self.variance_type = variance_type

    def step(
        self,
        model: Denoiser,
        x: Tensor,
        t: int,
        t_prev: int,
        generator: NoiseSource = None,
        state: dict[str, Any] | None = None,
    ) -> Tensor:
        x0, _ = self._predict(model, x, t)
        c_x0, c_xt, sigma = self._coefficients(t, t_prev)
        x_prev = c_x0 * x0 + c_xt * x
        if sigma > 0:
            x_prev = x_prev + sigma * draw_noise(x.shape, generator, x.device, x.dtype)
        return x_prev

    def _coefficients(self, t: int, t_prev: int) -> tuple[float, float, float]:
        """(c_x0, c_xt, σ) with x_{t_prev} = c_x0 x̂_0 + c_xt x_t + σ z, the posterior between t and t_prev."""
        a_t, a_prev = self.schedule.alpha_bar(t), self.schedule.alpha_bar(t_prev)
        beta = 1.0 - a_t / a_prev  # the effective β of the jump t -> t_prev
        c_x0 = math.sqrt(a_prev) * beta / (1.0 - a_t)
        c_xt = math.sqrt(1.0 - beta) * (1.0 - a_prev) / (1.0 - a_t)
        if t_prev < 0:
            return c_x0, c_xt, 0.0
        variance = beta * (1.0 - a_prev) / (1.0 - a_t) if self.variance_type == "fixed_small" else beta
        return c_x0, c_xt, math.sqrt(max(variance, 0.0))
