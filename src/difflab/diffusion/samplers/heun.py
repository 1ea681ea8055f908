"""Euler and Heun (Karras et al. 2022, "EDM") on the probability-flow ODE dx̄/dσ = ε̂, with
x̄ = x_t/√ᾱ_t and σ_t = √((1-ᾱ_t)/ᾱ_t), over the discrete timesteps the model was trained on."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..schedule import NoiseSchedule
from .base import Denoiser, Sampler


def sigma_of(schedule: NoiseSchedule, t: int) -> float:
    """EDM's noise level σ_t = √((1-ᾱ_t)/ᾱ_t); 0 for clean data (t = -1)."""
    a = schedule.alpha_bar(t)
    return math.sqrt((1.0 - a) / a)


class EulerSampler(Sampler):
    """First-order Euler steps in σ; deterministic; NFE = steps (mathematically DDIM with η=0)."""

    default_steps = 50
    heun = False

    def __init__(
        self,
        schedule: NoiseSchedule,
        steps: int | None = None,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "trailing",
        clip_x0: float | None = None,
    ) -> None:
        super().__init__(schedule, steps, prediction_type, timestep_spacing, clip_x0)

    @property
    def nfe(self) -> int:
        # Heun evaluates the model twice per step except on the last one (σ = 0 there).
        return 2 * len(self.timesteps) - 1 if self.heun else len(self.timesteps)

    def advance(
        self, model: Denoiser, x: Tensor, t: int, t_prev: int, generator: torch.Generator | None, state: dict
    ) -> Tensor:
        s, s_next = sigma_of(self.schedule, t), sigma_of(self.schedule, t_prev)
        x_bar = x * math.sqrt(1 + s * s)  # x_t / √ᾱ_t
        _, eps = self.predict(model, x, t)
        x_bar_next = x_bar + (s_next - s) * eps
        if self.heun and t_prev >= 0:
            # Trapezoidal correction: average the slope at both ends of the step.
            _, eps_next = self.predict(model, x_bar_next / math.sqrt(1 + s_next * s_next), t_prev)
            x_bar_next = x_bar + (s_next - s) * 0.5 * (eps + eps_next)
        return x_bar_next / math.sqrt(1 + s_next * s_next)


class HeunSampler(EulerSampler):
    """Second-order Heun steps in σ (EDM's deterministic sampler); NFE = 2·steps - 1."""

    default_steps = 18
    heun = True
