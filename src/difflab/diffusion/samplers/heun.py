"""Heun (Karras et al. 2022, "EDM"): Euler in σ plus a trapezoidal correction, second order."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..sample_noise import NoiseSource
from .base import Denoiser
from .euler import EulerSampler


class HeunSampler(EulerSampler):
    """Second-order Heun steps in σ (EDM's deterministic sampler); NFE = 2·steps - 1."""

    default_steps = 18

    @property
    def nfe(self) -> int:
        # Two evaluations per step except on the last one (σ = 0 there, plain Euler).
        return 2 * len(self.timesteps) - 1

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
        x_next = self._move(x, eps, t, t_prev)
        if t_prev < 0:
            return x_next
        # Average the slope at both ends of the step.
        _, eps_next = self._predict(model, x_next, t_prev)
        return self._move(x, 0.5 * (eps + eps_next), t, t_prev)
