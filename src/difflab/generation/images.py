"""The one call that turns a generation request into images: sample.py in every mode, evaluate.py, the grid and
FID callbacks and difflab.load(...).sample() all run a Generation, so they cannot drift apart."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from ..diffusion.auto_batch import AUTO, auto_batch_size
from ..diffusion.generate import in_batches
from ..diffusion.samplers.base import Denoiser, model_device_dtype
from .memory import named_out_of_memory
from .request import GenerationRequest, Placement
from .threads import generation_threads


def resolved_batch_size(request: GenerationRequest, net: Denoiser, placement: Placement) -> int:
    """request.batch_size as given, or for "auto"/None the batch that fits on the network's device: measured with
    the very denoiser generation calls on a GPU, 64 (at most the sample count) elsewhere."""
    if request.batch_size not in (None, AUTO):
        return int(request.batch_size)
    numel = math.prod(int(size) for size in request.sample_shape)
    call = request.trial_call(net, placement)
    return max(1, auto_batch_size(call, len(request.indices), numel, placement[0]))


class Generation:
    """A request on a network, ready to run: its batch size fixed (probed once for "auto"), then its images in
    index order, batch by batch or all at once."""

    def __init__(self, request: GenerationRequest, net: Denoiser) -> None:
        self.request, self.net = request, net
        # Where the network runs, read once: the batch-size probe, the thread choice and the tensors made here.
        self.placement: Placement = model_device_dtype(net) or (torch.device("cpu"), torch.float32)
        self.batch_size = resolved_batch_size(request, net, self.placement)

    @property
    def steps(self) -> int:
        """How often on_step is called in all: batches × the method's steps per batch (0: it reports none)."""
        return math.ceil(len(self.request.indices) / self.batch_size) * self.request.method.steps

    def cpu_threads(self) -> contextlib.AbstractContextManager[int | None]:
        """A context on the CPU threads the request asks for (auto: chosen; see generation_threads)."""
        return generation_threads(self.request, self.net, self.batch_size, self.placement)

    def batches(self, on_step: Callable[[], None] | None = None) -> Iterator[tuple[list[int], Tensor]]:
        """(indices, images in [-1, 1]) of each batch, on the network's device; on_step() after every step. A
        latent diffusion request's latents are decoded here, the one place every caller's images come from."""
        request = self.request
        denoiser_for = request.denoiser_for(self.net)
        made = in_batches(
            request.method, denoiser_for, request.indices, request.seed, self.batch_size, on_step
        )
        if request.decode is not None:
            made = ((indices, request.decode(latents)) for indices, latents in made)
        return named_out_of_memory(made, self.batch_size, self.placement[0])

    def images(self, on_step: Callable[[], None] | None = None) -> Tensor:
        """Every image of the request, (N, C, H, W) in index order."""
        batches = [images for _, images in self.batches(on_step)]
        if not batches:
            device, dtype = self.placement
            return torch.empty((0, *self.request.sample_shape), device=device, dtype=dtype)
        return torch.cat(batches)


def generate_images(
    request: GenerationRequest, net: Denoiser, on_step: Callable[[], None] | None = None
) -> Tensor:
    """The request's images on its CPU threads: what difflab.load(...).sample() runs."""
    generation = Generation(request, net)
    with generation.cpu_threads():
        return generation.images(on_step)
