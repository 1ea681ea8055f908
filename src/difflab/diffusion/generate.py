"""Generate many samples in batches, each sample tied to its index.

Sample i draws its starting noise and every noise inside stochastic steps from its own generator seeded
from (seed, i), whatever the batch size or the number of DDP ranks that share the work, so a grid or an
evaluation set is reproducible and never duplicated. Each batch gets its own denoiser (its samples'
conditions, guidance, a data-consistency wrap), built once per batch by `batch_denoiser`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from .conditioning import CondFor
from .guidance import guided_for
from .precision import with_precision
from .sample_noise import SampleGenerators
from .samplers.base import Denoiser, Sampler, StepCallback, model_device_dtype

# A per-batch replacement of the denoiser of samples `indices` (super-resolution's data consistency).
Wrap = Callable[[Denoiser, Sequence[int]], Denoiser]
# How one batch is made: its denoiser, its samples' generators, a per-step callback -> the batch's images.
MakeBatch = Callable[[Denoiser, SampleGenerators, StepCallback | None], Tensor]


def batch_denoiser(
    net: Denoiser,
    indices: Sequence[int],
    cond_for: CondFor | None = None,
    guidance: float = 1.0,
    negative_for: CondFor | None = None,
    wrap: Wrap | None = None,
    guide: Denoiser | None = None,
) -> Denoiser:
    """The denoiser model(x_t, t) of the samples `indices`: `net` guided with their conditions (scale `guidance`,
    against `negative_for`'s when given, or against `guide` for autoguidance), then wrapped by `wrap`. `net` and
    `guide` as generation runs them (precision)."""
    denoiser = guided_for(net, cond_for, indices, guidance, negative_for, guide)
    return denoiser if wrap is None else wrap(denoiser, indices)


def in_batches(
    make: MakeBatch,
    denoiser_for: Callable[[Sequence[int]], Denoiser],
    indices: Sequence[int],
    seed: int,
    batch_size: int,
    on_step: Callable[[], None] | None = None,
) -> Iterator[tuple[list[int], Tensor]]:
    """(indices, images) of each batch of at most `batch_size` of `indices`, in order: `make` given the batch's
    denoiser and one generator per sample (seeded from (seed, index)). on_step() after every step of every batch."""
    step_callback = None if on_step is None else (lambda i, t, x: on_step())
    for start in range(0, len(indices), batch_size):
        # Sliced, not listed whole: a range of any n stays lazy.
        chunk = list(indices[start : start + batch_size])
        with torch.no_grad():  # not around the yield: the caller's own work keeps its grad mode
            images = make(denoiser_for(chunk), SampleGenerators(seed, chunk), step_callback)
        yield chunk, images


def from_noise(sampler: Sampler, sample_shape: Sequence[int]) -> MakeBatch:
    """How a batch is sampled: `sampler` from each sample's own starting noise."""

    def make(denoiser: Denoiser, generators: SampleGenerators, callback: StepCallback | None) -> Tensor:
        shape = (len(generators), *sample_shape)
        return sampler.sample(denoiser, shape, generator=generators, callback=callback)

    return make


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
    wrap: Wrap | None = None,
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
    net = with_precision(model, precision)

    def denoiser_for(chunk: Sequence[int]) -> Denoiser:
        return batch_denoiser(net, chunk, cond_for, guidance, negative_for, wrap)

    make = from_noise(sampler, sample_shape)
    batches = [images for _, images in in_batches(make, denoiser_for, indices, seed, batch_size, on_step)]
    if not batches:
        return torch.empty((0, *sample_shape), device=device, dtype=dtype)
    return torch.cat(batches)
