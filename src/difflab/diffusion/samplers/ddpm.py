"""DDPM ancestral sampling (Ho et al. 2020), generalised to any subsequence of timesteps."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..schedule import NoiseSchedule
from .base import Denoiser, Sampler, draw_noise

VARIANCE_TYPES = ("fixed_small", "fixed_large")


class DDPMSampler(Sampler):
    """Ancestral sampler x_{t-1} ~ q(x_{t-1} | x_t, x̂_0); by default over all T steps (NFE = T)."""

    def __init__(
        self,
        schedule: NoiseSchedule,
        steps: int | None = None,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "leading",
        clip_x0: float | None = None,
        variance_type: str = "fixed_small",
    ) -> None:
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(
                f"unknown variance_type {variance_type!r}; choose one of {', '.join(VARIANCE_TYPES)}"
            )
        steps = schedule.timesteps if steps is None else steps
        super().__init__(schedule, steps, prediction_type, timestep_spacing, clip_x0)
        self.variance_type = variance_type

    def step_coefficients(self, t: int, t_prev: int) -> tuple[float, float, float]:
        """(c_x0, c_xt, σ) with x_{t_prev} = c_x0 x̂_0 + c_xt x_t + σ z, the posterior between t and t_prev."""
        a_t, a_prev = self.schedule.alpha_bar(t), self.schedule.alpha_bar(t_prev)
        beta = 1.0 - a_t / a_prev  # the effective β of the jump t -> t_prev
        c_x0 = math.sqrt(a_prev) * beta / (1.0 - a_t)
        c_xt = math.sqrt(1.0 - beta) * (1.0 - a_prev) / (1.0 - a_t)
        if t_prev < 0:
            return c_x0, c_xt, 0.0
        variance = beta * (1.0 - a_prev) / (1.0 - a_t) if self.variance_type == "fixed_small" else beta
        return c_x0, c_xt, math.sqrt(max(variance, 0.0))

    def step(self, x0: Tensor, x: Tensor, t: int, t_prev: int, generator: torch.Generator | None) -> Tensor:
        """One ancestral step from x_t to x_{t_prev} given the prediction x̂_0."""
        c_x0, c_xt, sigma = self.step_coefficients(t, t_prev)
        x_prev = c_x0 * x0 + c_xt * x
        if sigma > 0:
            x_prev = x_prev + sigma * draw_noise(x.shape, generator, x.device, x.dtype)
        return x_prev

    def advance(
        self, model: Denoiser, x: Tensor, t: int, t_prev: int, generator: torch.Generator | None, state: dict
    ) -> Tensor:
        x0, _ = self.predict(model, x, t)
        return self.step(x0, x, t, t_prev, generator)
