"""Small pieces every formulation's training step shares: per-sample shapes, draws and the weighted loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

# The network as training calls it: net(x_in, time) -> output, time a float or long tensor (N,).
Network = Callable[[Tensor, Tensor], Tensor]


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """values (N,) shaped (N, 1, ..., 1) to broadcast against `like`, in its dtype."""
    return values.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def randn(n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """n standard normals in float32 on `device`, from `generator` (torch's global one when None)."""
    return torch.randn(n, device=device, generator=generator)


def weighted_mse(prediction: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
    """Mean over the batch of weight·‖prediction − target‖² (per element); None is a weight of 1, in float32."""
    if weight is None:  # exactly the unweighted loss difflab has always computed
        return F.mse_loss(prediction.float(), target.float())
    error = (prediction.float() - target.float()) ** 2
    return (per_sample(weight, error) * error).mean()


def require_positive(name: str, value: float) -> float:
    """value if it is a number > 0, else a one-line error naming the setting."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0 (got {value})")
    return float(value)
