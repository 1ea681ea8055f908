"""Generate many samples in batches, with starting noise tied to each sample's index.

Sample i always starts from the noise of seed (seed, i), whatever the batch size or the number of DDP
ranks that share the work, so a grid or an evaluation set is reproducible and never duplicated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .samplers.base import Denoiser, Sampler, model_device_dtype


def _mix(seed: int, index: int, salt: int = 0) -> int:
    """A distinct 63-bit seed per (seed, index, salt); stable across processes, unlike hash() of strings."""
    return (int(seed) * 6_364_136_223_846_793_005 + int(index) * 1_442_695_040_888_963_407 + salt) % (2**63)


def indexed_noise(indices: Sequence[int], sample_shape: Sequence[int], seed: int) -> Tensor:
    """Standard normal noise for the given sample indices, one CPU generator per index (cheap: one draw each)."""
    out = torch.empty((len(indices), *sample_shape))
    g = torch.Generator()
    for row, i in enumerate(indices):
        g.manual_seed(_mix(seed, i))
        out[row] = torch.randn(tuple(sample_shape), generator=g)
    return out


@torch.no_grad()
def generate(
    sampler: Sampler,
    model: Denoiser,
    indices: Sequence[int],
    sample_shape: Sequence[int],
    seed: int = 0,
    batch_size: int = 64,
) -> Tensor:
    """Samples for `indices` (values in [-1, 1] if the model was trained on such data), on the model's device."""
    device, dtype = model_device_dtype(model) or (torch.device("cpu"), torch.float32)
    indices = list(indices)
    batches = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        x_T = indexed_noise(chunk, sample_shape, seed).to(device, dtype)
        # Fresh noise inside stochastic samplers: seeded by the chunk's first index for reproducibility.
        g = torch.Generator(device=device).manual_seed(_mix(seed, chunk[0], salt=1))
        batches.append(sampler.sample(model, x_T.shape, generator=g, x_T=x_T))
    if not batches:
        return torch.empty((0, *sample_shape), device=device, dtype=dtype)
    return torch.cat(batches)
