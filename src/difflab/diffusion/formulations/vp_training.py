"""Training a VP (DDPM-table) network: t ~ U{0..T-1}, x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε, an ε/x0/v target, a weighting.

With the defaults (uniform weighting, no offset noise, no rescale) this is exactly difflab's DiffusionLoss: the
same draws (t, then ε) from the same generator, the same loss, so today's runs are unchanged. Offset noise
(Guttenberg 2023) adds one shared N(0, offset²) per sample and channel to ε, so the model can move an image's
mean brightness; it draws after ε, only when it is on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..schedule import NoiseSchedule, check_prediction_type
from .common import Network, weighted_mse
from .vp import VP, VPDenoiser
from .weighting import min_snr_weight, require_gamma, require_weighting
from .zero_snr import rescale_zero_terminal_snr

VP_WEIGHTINGS = ("uniform", "min_snr")


class VPTraining:
    """The VP formulation as training and sampling see it: its schedule (rescaled on request) and its loss."""

    name = "vp"

    def __init__(
        self,
        schedule: NoiseSchedule,
        prediction_type: str = "epsilon",
        weighting: str = "uniform",
        min_snr_gamma: float = 5.0,
        zero_terminal_snr: bool = False,
        offset_noise: float = 0.0,
    ) -> None:
        self.schedule = rescale_zero_terminal_snr(schedule) if zero_terminal_snr else schedule
        check_prediction_type(prediction_type)
        self.prediction_type = prediction_type
        self.weighting = require_weighting(weighting, VP_WEIGHTINGS, self.name)
        self.min_snr_gamma = require_gamma(min_snr_gamma)
        if not offset_noise >= 0:
            raise ValueError(f"offset_noise must be >= 0 (got {offset_noise})")
        self.offset_noise = float(offset_noise)
        self.vp = VP(self.schedule)

    def loss_weight(self, t: Tensor) -> Tensor | None:
        """Min-SNR-γ's weight for this prediction type at timesteps t (None: uniform)."""
        if self.weighting == "uniform":
            return None
        alpha_bar = self.schedule.gather("alphas_cumprod", t, t.float())
        return min_snr_weight(alpha_bar / (1.0 - alpha_bar), self.min_snr_gamma, self.prediction_type)

    def loss(self, net: Network, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One training loss: draw t, then ε (then the offset) from generator; regress the target."""
        n = x0.shape[0]
        t = torch.randint(0, self.schedule.timesteps, (n,), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        if self.offset_noise:
            shape = (n, x0.shape[1], *([1] * (x0.ndim - 2)))
            offset = torch.randn(shape, device=x0.device, dtype=x0.dtype, generator=generator)
            noise = noise + self.offset_noise * offset
        x_t = self.schedule.q_sample(x0, t, noise)
        target = self.schedule.training_target(x0, t, noise, self.prediction_type)
        return weighted_mse(net(x_t, t), target, self.loss_weight(t))

    def denoiser(self, net: Network, clip_x0: float | None = 1.0) -> VPDenoiser:
        """D(x, σ) of the trained network (see formulations/vp.py)."""
        return self.vp.denoiser(net, self.prediction_type, clip_x0)
