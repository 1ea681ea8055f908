"""Generate many samples in batches, each sample tied to its index.

Sample i draws its starting noise and every noise inside stochastic steps from its own generator seeded
from (seed, i), whatever the batch size or the number of DDP ranks that share the work, so a grid or an
evaluation set is reproducible and never duplicated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .conditioning import CondFor
from .guidance import guided_for
from .precision import with_precision
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
    cond_for: CondFor | None = None,
    guidance: float = 1.0,
    negative_for: CondFor | None = None,
    on_step: Callable[[], None] | None = None,
    precision: str = "fp32",
    wrap: Callable[[Denoiser, Sequence[int]], Denoiser] | None = None,
) -> Tensor:
    """Samples for `indices` (values in [-1, 1] if the model was trained on such data), on the model's device.

    For a conditional net, `cond_for(indices)` gives those samples' conditions; they are sampled with
    classifier-free guidance of scale `guidance` (against `negative_for`'s conditions when given, else the
    unconditional branch). A condition is tied to its sample index, like the noise. `on_step()` is called
    after every sampler step of every batch (progress: batches × len(sampler.timesteps) steps in all).
    precision="bf16" runs the network under bf16 autocast; the sampler's math and the result stay float32.
    `wrap(denoiser, indices)` replaces each batch's denoiser (super-resolution's data consistency).
    """
    device, dtype = model_device_dtype(model) or (torch.device("cpu"), torch.float32)
    model = with_precision(model, precision)
    indices = list(indices)
    batches = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        generators = SampleGenerators(seed, chunk)
        denoiser = guided_for(model, cond_for, chunk, guidance, negative_for)
        if wrap is not None:
            denoiser = wrap(denoiser, chunk)
        step_callback = None if on_step is None else (lambda i, t, x: on_step())
        batches.append(
            sampler.sample(
                denoiser, (len(chunk), *sample_shape), generator=generators, callback=step_callback
            )
        )
    if not batches:
        return torch.empty((0, *sample_shape), device=device, dtype=dtype)
    return torch.cat(batches)


def generation_steps(sampler: Sampler, n: int, batch_size: int) -> int:
    """How many times `generate` calls on_step for n samples: batches × the sampler's steps."""
    return math.ceil(n / batch_size) * len(sampler.timesteps)
