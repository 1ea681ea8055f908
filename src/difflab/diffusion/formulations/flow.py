"""Rectified flow / conditional flow matching (Liu et al. 2023; Lipman et al. 2023; SD3's t distributions).

The path is x_t = (1 − t) x_0 + t ε for t in [0, 1] and the network regresses the velocity dx_t/dt = ε − x_0 at
time input 1000·t (as SD3 and diffusers). On the core's VE scale this is σ = t/(1 − t) and x = x_t/(1 − t)
(= x_0 + σ ε), so D(x, σ) = x_t − t v̂ with x_t = x/(1 + σ), t = σ/(1 + σ). An Euler step in σ on that D is
exactly an Euler step of the flow ODE in t (both are DDIM's step), so every core sampler samples a flow model.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..samplers.continuous import DenoiserModule
from .common import Network, per_sample, randn, require_positive, weighted_mse
from .weighting import require_weighting

T_SAMPLINGS = ("uniform", "logit_normal", "mode")
FLOW_WEIGHTINGS = ("uniform",)
TIME_SCALE = 1000.0  # the network sees 1000·t, the range of the integer timesteps it was built for


def shift_time(t: Tensor, shift: float) -> Tensor:
    """SD3's resolution shift t' = s·t/(1 + (s − 1)·t): s > 1 spends more of training and sampling at high noise."""
    return shift * t / (1.0 + (shift - 1.0) * t)


class Flow:
    """The linear path, its velocity target, SD3's training distributions of t and a uniform-in-t grid."""

    name = "flow"

    def __init__(
        self,
        t_sampling: str = "logit_normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        mode_scale: float = 1.29,
        shift: float = 1.0,
        t_max: float = 0.999,
        weighting: str = "uniform",
    ) -> None:
        if t_sampling not in T_SAMPLINGS:
            raise ValueError(f"unknown t_sampling {t_sampling!r}; choose one of {', '.join(T_SAMPLINGS)}")
        self.t_sampling = t_sampling
        self.logit_mean = float(logit_mean)
        self.logit_std = require_positive("logit_std", logit_std)
        # SD3 eq. 20 keeps t in [0, 1] for -1 ≤ s ≤ 2/(π − 2).
        if not -1.0 <= mode_scale <= 2.0 / (math.pi - 2.0):
            raise ValueError(f"mode_scale must be between -1 and 2/(π-2) ≈ 1.75 (got {mode_scale})")
        self.mode_scale = float(mode_scale)
        self.shift = require_positive("shift", shift)
        if not 0.0 < t_max < 1.0:
            raise ValueError(f"t_max must be in (0, 1): t = 1 is pure noise, at σ = ∞ (got {t_max})")
        self.t_max = float(t_max)
        self.weighting = require_weighting(weighting, FLOW_WEIGHTINGS, self.name)

    def draw_t(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Training times: uniform, logit-normal σ(m + s·n), or SD3's mode sampling, then the shift."""
        if self.t_sampling == "logit_normal":
            t = torch.sigmoid(randn(n, device, generator) * self.logit_std + self.logit_mean)
        else:
            u = torch.rand(n, device=device, generator=generator)
            t = u if self.t_sampling == "uniform" else self._mode(u)
        return shift_time(t, self.shift)

    def _mode(self, u: Tensor) -> Tensor:
        """SD3 eq. 20: t = 1 − u − s·(cos²(πu/2) − 1 + u)."""
        return 1.0 - u - self.mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1.0 + u)

    def training_example(self, x0: Tensor, t: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(network input x_t, network time 1000·t, velocity target ε − x_0) at times t."""
        tt = per_sample(t, x0)
        return (1.0 - tt) * x0 + tt * noise, t * TIME_SCALE, noise - x0

    def loss(self, net: Network, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One training loss: draw t (first) and ε (second) from generator, regress the velocity."""
        t = self.draw_t(x0.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x_t, time, target = self.training_example(x0, t, noise)
        return weighted_mse(net(x_t, time), target, None)

    def sigmas(self, steps: int) -> Tensor:
        """The sampling grid: t uniform from t_max to 0 in `steps` steps, shifted, as σ = t/(1 − t) (ends at 0)."""
        if int(steps) < 1:
            raise ValueError(f"a σ grid needs at least 1 step (got {steps})")
        t = shift_time(torch.linspace(self.t_max, 0.0, int(steps) + 1, dtype=torch.float64), self.shift)
        return t / (1.0 - t)

    def denoiser(self, net: Network, clip_x0: float | None = None) -> FlowDenoiser:
        """D(x, σ) of a velocity network trained on this path."""
        return FlowDenoiser(net, clip_x0)


class FlowDenoiser(DenoiserModule):
    """D(x, σ) = x_t − t v̂(x_t, 1000 t) with t = σ/(1 + σ), x_t = x/(1 + σ); optionally clipped to ±clip_x0."""

    def __init__(self, net: Network, clip_x0: float | None = None) -> None:
        super().__init__()
        self.model = net
        self.clip_x0 = clip_x0

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        sigma = sigma.to(torch.promote_types(x.dtype, torch.float32))
        t = sigma / (1.0 + sigma)
        x_t = x / per_sample(1.0 + sigma, x)
        x0 = x_t - per_sample(t, x) * self.model(x_t, t * TIME_SCALE).to(x.dtype)
        return x0 if self.clip_x0 is None else x0.clamp(-self.clip_x0, self.clip_x0)
