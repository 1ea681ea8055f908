"""Euler (Karras et al. 2022, "EDM") on the probability-flow ODE dx̄/dσ = ε̂, with x̄ = x_t/√ᾱ_t and
σ_t = √((1-ᾱ_t)/ᾱ_t), over the discrete timesteps the model was trained on."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ..sample_noise import NoiseSource
from ..schedule import NoiseSchedule
from .base import Denoiser, Sampler


def edm_sigma(schedule: NoiseSchedule, t: int) -> float:
    """EDM's noise level σ_t = √((1-ᾱ_t)/ᾱ_t); 0 for clean data (t = -1)."""
    a = schedule.alpha_bar(t)
    return math.sqrt((1.0 - a) / a)


class EulerSampler(Sampler):
    """First-order Euler steps in σ; deterministic; NFE = steps (mathematically DDIM with η=0)."""

    default_spacing = "trailing"

    def step(
        self,
        model: Denoiser,
        x: Tensor,
        t: int,
        t_prev: int,
        generator: NoiseSource = None,
        state: dict[str, Any] | None = None,
    ) -> Tensor:
        _, eps = self._predict(model, x, t)
        return self._move(x, eps, t, t_prev)

    def _move(self, x: Tensor, slope: Tensor, t: int, t_prev: int) -> Tensor:
        """x_{t_prev} from x_t along dx̄/dσ = slope: x̄' = x̄ + (σ' - σ)·slope, in x = x̄/√(1+σ²)."""
        s, s_next = edm_sigma(self.schedule, t), edm_sigma(self.schedule, t_prev)
        x_bar = x * math.sqrt(1 + s * s)  # x_t / √ᾱ_t
        return (x_bar + (s_next - s) * slope) / math.sqrt(1 + s_next * s_next)
