"""Data consistency for super-resolution: every x̂_0 the net predicts is projected onto the images whose
downsampling is exactly the low-resolution input (the range-null-space step of DDNM, Wang et al. 2023; the
back-projection of classic SR). The net still invents the detail the input lacks (the null space of the
downsampling); the content the input fixes is taken from the input, so down(output) = input.

The downsampling (`superres.downsample` without its clamp) is separable, down(x) = A_h x A_wᵀ, with A the 1-D
matrix of antialiased bicubic resampling; its pseudo-inverse A⁺ gives the orthogonal projection
x ↦ x − A_h⁺ (down(x) − y) A_w⁺ᵀ onto {x : down(x) = y}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .samplers.base import Denoiser
from .schedule import NoiseSchedule, check_prediction_type


def downsampling_matrix(size: int, factor: int) -> Tensor:
    """The (size // factor, size) float64 matrix A of `superres.downsample` along one axis: row i weighs the
    input pixels that make output pixel i."""
    basis = torch.eye(size, dtype=torch.float64).view(size, 1, 1, size)
    rows = F.interpolate(basis, size=(1, size // factor), mode="bicubic", antialias=True)
    return rows.view(size, size // factor).T


class LowResProjection:
    """x ↦ the image nearest to x (least squares) whose downsampling by `factor` is `low` (N, C, h, w)."""

    def __init__(self, low: Tensor, factor: int) -> None:
        h, w = low.shape[-2:]
        a_h, a_w = downsampling_matrix(h * factor, factor), downsampling_matrix(w * factor, factor)
        place = {"device": low.device, "dtype": low.dtype}
        self.low = low
        self.a_h, self.a_w = a_h.to(**place), a_w.to(**place)
        self.pinv_h, self.pinv_w = torch.linalg.pinv(a_h).to(**place), torch.linalg.pinv(a_w).to(**place)

    def down(self, x: Tensor) -> Tensor:
        """down(x) as a matrix product (equal to superres.downsample before its clamp)."""
        return self.a_h @ x @ self.a_w.T

    def __call__(self, x: Tensor) -> Tensor:
        residual = self.down(x) - self.low.to(x.dtype)
        return x - self.pinv_h.to(x.dtype) @ residual @ self.pinv_w.T.to(x.dtype)


class DataConsistent(nn.Module):
    """model(x_t, t) whose x̂_0 is clipped to [-clip_x0, clip_x0] and then projected onto down(x̂_0) = low; the
    output is in the model's prediction type (ε, x_0 or v), so every sampler takes it unchanged."""

    def __init__(
        self,
        model: Denoiser,
        schedule: NoiseSchedule,
        projection: LowResProjection,
        prediction_type: str = "epsilon",
        clip_x0: float | None = 1.0,
        rounds: int = 10,
    ) -> None:
        super().__init__()
        self.model = model  # an nn.Module is registered, so samplers find its device and dtype
        self.schedule = schedule
        self.projection = projection
        check_prediction_type(prediction_type)
        self.prediction_type = prediction_type
        self.clip_x0 = clip_x0
        self.rounds = rounds

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        x0, _ = self.schedule.to_x0_and_eps(self.model(x, t), x, t, self.prediction_type)
        if self.clip_x0 is None:
            x0 = self.projection(x0)
        else:
            # Alternating projections (POCS) onto the data range and onto down(x) = low, ending in the range:
            # the sampler clips x̂_0 again, which would undo a lone projection's excursions past ±clip_x0.
            for _ in range(self.rounds):
                x0 = self.projection(x0.clamp(-self.clip_x0, self.clip_x0)).clamp(-self.clip_x0, self.clip_x0)
        if self.prediction_type == "x0":
            return x0
        eps = self.schedule.predict_eps_from_x0(x, t, x0)
        return eps if self.prediction_type == "epsilon" else self.schedule.velocity(x0, t, eps)
