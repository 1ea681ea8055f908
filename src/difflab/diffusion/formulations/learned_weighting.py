"""EDM2's learned-uncertainty loss weighting (Karras et al. 2024, "Analyzing and Improving the Training Dynamics
of Diffusion Models", eq. 21): loss = w(σ)/e^{u(σ)} ‖D − x_0‖² + u(σ), with u a small learned function of the
noise level.

For a fixed σ, w/e^u·E + u is smallest at e^u = E, the expected weighted error there, so u learns the log of each
noise level's weighted MSE and the loss a level contributes is rescaled to about 1: every level is learned at a
similar pace whatever its difficulty. As in NVlabs/edm2's `Precond`, u is a linear map of fixed random Fourier
features of the noise embedding c_noise = ln(σ)/4. It is trained with the net by the same optimizer and saved in
the checkpoint beside it, but D does not use it, so it never reaches sampling.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

FEATURES = 128  # EDM2's logvar_channels
FEATURES_SEED = (
    0  # the fixed frequencies and phases come from their own generator: training draws are unchanged
)


class LearnedUncertainty(nn.Module):
    """u(c_noise): fixed Fourier features cos(2π(f·c + φ))·√2 (f ~ N(0, 1), φ ~ U[0, 1)) and a linear layer.

    The layer starts at zero, so training starts as the plain weighting w(σ) (u = 0)."""

    def __init__(self, features: int = FEATURES) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(FEATURES_SEED)
        self.register_buffer("freqs", 2 * math.pi * torch.randn(features, generator=g))
        self.register_buffer("phases", 2 * math.pi * torch.rand(features, generator=g))
        self.linear = nn.Linear(features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, c_noise: Tensor) -> Tensor:
        """u at noise embeddings c_noise (N,), as (N,) in float32."""
        features = torch.cos(c_noise.float().outer(self.freqs) + self.phases) * math.sqrt(2)
        return self.linear(features).squeeze(-1)


def uncertainty_weighted_loss(weighted_squared_error: Tensor, u: Tensor) -> Tensor:
    """Mean over elements of weighted_squared_error/e^u + u, with u (N,) one value per sample (EDM2 eq. 21)."""
    per_sample = u.reshape(-1, *([1] * (weighted_squared_error.ndim - 1)))
    return (weighted_squared_error * torch.exp(-per_sample)).mean() + u.mean()
