"""Super-resolution requests (SR3): n outputs per low-resolution picture, optionally projected so that each
output downsamples exactly to its input (diffusion.data_consistency)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..diffusion import Denoiser, Sampler
from ..diffusion.data_consistency import DataConsistent, LowResProjection
from ..diffusion.generate import Wrap
from ..diffusion.samplers.base import model_device_dtype
from .conditions import superres_conditions
from .images import Generation
from .methods import Sampling
from .request import GenerationRequest


def consistent_with(low: Tensor, size: int, n: int, sampler: Sampler) -> Wrap:
    """generate's wrap: the denoiser of samples `indices` made consistent with their inputs low[k // n] (cycled
    past the last input, as superres_conditions cycles them)."""
    factor = size // low.shape[-1]

    def wrap(denoiser: Denoiser, indices: Sequence[int]) -> Denoiser:
        device, dtype = model_device_dtype(denoiser) or (low.device, low.dtype)
        rows = torch.as_tensor(list(indices), dtype=torch.long) // n % len(low)
        projection = LowResProjection(low[rows].to(device, dtype), factor)
        return DataConsistent(sampler.denoiser(denoiser), projection, sampler.clip_x0)

    return wrap


def superres_request(
    sampler: Sampler, low: Tensor, size: int, n: int = 1, consistency: bool = False, **fields: Any
) -> GenerationRequest:
    """n outputs (size x size) for each low-res picture of `low` (M, C, h, w) in [-1, 1]; output k is of
    input k // n and depends only on (seed, k), like any sample. consistency=True projects every x̂_0 onto
    down(x̂_0) = its input. `fields`: the request's others (seed, batch_size, precision, …)."""
    return GenerationRequest(
        Sampling(sampler, (low.shape[1], size, size)),
        range(len(low) * n),
        conditions=superres_conditions(low, size, n),
        wrap=consistent_with(low, size, n, sampler) if consistency else None,
        per_picture=n,
        **fields,
    )


def super_resolve(
    sampler: Sampler,
    net: Denoiser,
    low: Tensor,
    size: int,
    n: int = 1,
    seed: int = 0,
    batch_size: int | str | None = 64,
    precision: str = "fp32",
    consistency: bool = False,
) -> Tensor:
    """The images of superres_request on `net` (batch_size "auto": as many as fit on the GPU)."""
    request = superres_request(
        sampler, low, size, n, consistency, seed=seed, batch_size=batch_size, precision=precision
    )
    return Generation(request, net).images()
