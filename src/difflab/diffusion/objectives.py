"""The training objective: regress the network's output on ε (DDPM's L_simple), x_0 or v."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from .samplers.base import Denoiser
from .schedule import NoiseSchedule, check_prediction_type


class DiffusionLoss:
    """loss = ‖f(x_t, t) − target‖² with t ~ U{0..T-1}, ε ~ N(0, I), x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε."""

    def __init__(self, schedule: NoiseSchedule, prediction_type: str = "epsilon") -> None:
        self.schedule = schedule
        check_prediction_type(prediction_type)
        self.prediction_type = prediction_type

    def __call__(
        self,
        model: Denoiser,
        x0: Tensor,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Mean-squared error over the batch; t and noise are drawn (from generator) when not given."""
        if t is None:
            t = torch.randint(
                0, self.schedule.timesteps, (x0.shape[0],), device=x0.device, generator=generator
            )
        if noise is None:
            noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x_t = self.schedule.q_sample(x0, t, noise)
        target = self.schedule.training_target(x0, t, noise, self.prediction_type)
        return F.mse_loss(model(x_t, t).float(), target.float())
