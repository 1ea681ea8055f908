"""Generate many samples in batches, each sample tied to its index.

Sample i draws its starting noise and every noise inside stochastic steps from its own generator seeded
from (seed, i), whatever the batch size or the number of DDP ranks that share the work, so a grid or an
evaluation set is reproducible and never duplicated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .random import SampleGenerators
from .samplers.base import Denoiser, Sampler, model_device_dtype


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
        generators = SampleGenerators(seed, indices[start : start + batch_size])
        batches.append(sampler.sample(model, (len(generators), *sample_shape), generator=generators))
    if not batches:
        return torch.empty((0, *sample_shape), device=device, dtype=dtype)
    return torch.cat(batches)
