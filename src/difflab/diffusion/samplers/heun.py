"""Heun (Karras et al. 2022, "EDM", Algorithm 2): Euler in σ plus a trapezoidal correction, second order.

With S_churn > 0 each step with S_tmin ≤ σ ≤ S_tmax first raises the noise to σ̂ = σ(1 + γ),
γ = min(S_churn/N, √2 − 1), by adding fresh noise of std √(σ̂² − σ²)·S_noise ("churn"); S_churn = 0 (the
default) is EDM's deterministic sampler. A formulation whose network knows only some noise levels passes
`round_sigma` (EDM's `net.round_sigma`), so σ̂ is one of them and D stays exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import Tensor

from ..sample_noise import NoiseSource, draw_noise
from ..schedule import NoiseSchedule
from .base import Sampler
from .continuous import SigmaDenoiser, SigmaSampler, denoise_at, slope


class Heun(SigmaSampler):
    """EDM's second-order sampler on the core; NFE = 2·steps − 1 (the step to σ = 0 is plain Euler)."""

    def __init__(
        self,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float | None = None,
        s_noise: float = 1.0,
        round_sigma: Callable[[float], float] | None = None,
    ) -> None:
        for name, value in {"s_churn": s_churn, "s_tmin": s_tmin, "s_noise": s_noise}.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Heun {name} must be a finite number >= 0 (got {value})")
        s_tmax = math.inf if s_tmax is None else s_tmax  # None: no upper bound (a config or JSON has no ∞)
        if not s_tmax >= s_tmin:  # also refuses NaN
            raise ValueError(f"Heun s_tmax must be >= s_tmin (got {s_tmax} < {s_tmin})")
        self.s_churn, self.s_tmin, self.s_tmax, self.s_noise = s_churn, s_tmin, s_tmax, s_noise
        self.round_sigma = round_sigma

    def nfe(self, steps: int) -> int:
        return 2 * steps - 1

    def step(
        self,
        denoiser: SigmaDenoiser,
        x: Tensor,
        sigma: float,
        sigma_next: float,
        generator: NoiseSource = None,
        state: dict[str, Any] | None = None,
    ) -> Tensor:
        steps = (state or {}).get("steps", 1)
        gamma = min(self.s_churn / steps, math.sqrt(2) - 1) if self.s_tmin <= sigma <= self.s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0 and self.round_sigma is not None:
            sigma_hat = max(self.round_sigma(sigma_hat), sigma)
        if gamma > 0:
            noise = draw_noise(x.shape, generator, x.device, x.dtype)
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * self.s_noise * noise
        d = slope(x, denoise_at(denoiser, x, sigma_hat), sigma_hat)
        x_next = x + (sigma_next - sigma_hat) * d
        if sigma_next == 0:
            return x_next
        d_next = slope(x_next, denoise_at(denoiser, x_next, sigma_next), sigma_next)
        return x + (sigma_next - sigma_hat) * 0.5 * (d + d_next)


class HeunSampler(Sampler):
    """Heun over the schedule's timesteps (see `Sampler` for the shared knobs); churn as in `Heun`.

    A churned σ̂ is rounded to the nearest σ_t of the schedule (as EDM does for its discrete iDDPM models), so
    the network only ever runs at the timesteps it was trained on, with the matching input scale.
    """

    default_steps = 18
    default_spacing = "trailing"

    def __init__(
        self,
        schedule: NoiseSchedule,
        *,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float | None = None,
        s_noise: float = 1.0,
        **options: Any,
    ) -> None:
        super().__init__(schedule, Heun(s_churn, s_tmin, s_tmax, s_noise), **options)
        self.core.round_sigma = self.formulation.round_sigma
