"""A generation request: what to generate and how, built once from what a user or a callback asks, and read by
the one call that turns it into images (generation.images)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..diffusion.auto_batch import AUTO
from ..diffusion.generate import Wrap, batch_denoiser
from ..diffusion.precision import with_precision
from ..diffusion.samplers.base import Denoiser
from ..io.read_inputs import LoadedImages
from .conditions import Conditions
from .methods import Method

Placement = tuple[torch.device, torch.dtype]  # where a network runs: its device and its parameters' dtype


@dataclass
class GenerationRequest:
    """Samples `indices`, made by `method` (sampling from noise, img2img, inpaint): sample i from the noise of
    (seed, i) and its conditions, with classifier-free guidance of scale `guidance` (against
    conditions.negative_for when set), the network under `precision`. batch_size and cpu_threads: a number, or
    "auto" to let generation choose."""

    method: Method
    indices: Sequence[int]
    seed: int = 0
    batch_size: int | str | None = AUTO
    guidance: float = 1.0
    precision: str = "fp32"
    conditions: Conditions = field(default_factory=Conditions)
    wrap: Wrap | None = None  # each batch's denoiser replaced (super-resolution's data consistency)
    cpu_threads: int | str | None = AUTO
    recipe_threads: int | None = None  # the threads the model's recipe trained with: auto's first choice
    pictures: LoadedImages | None = None  # what an edit or a super-resolution starts from (shown in its grid)
    per_picture: int = 1  # results per picture (edits, super-resolution)
    guide: Denoiser | None = None  # autoguidance: guidance= pulls away from this weaker model's prediction
    decode: Callable[[Tensor], Tensor] | None = None  # latent diffusion: latents -> images, once per batch

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The (C, H, W) of what the method makes (latents, for a latent diffusion model)."""
        return self.method.sample_shape

    def denoiser_for(self, net: Denoiser) -> Callable[[Sequence[int]], Denoiser]:
        """indices -> the denoiser of those samples, as generation calls it (built once per batch)."""
        net = with_precision(net, self.precision)
        guide = None if self.guide is None else with_precision(self.guide, self.precision)
        c = self.conditions
        return lambda indices: batch_denoiser(
            net, indices, c.cond_for, self.guidance, c.negative_for, self.wrap, guide
        )

    def trial_call(self, net: Denoiser, placement: Placement) -> Callable[[int], Tensor]:
        """call(b): one no-grad call of the denoiser generation calls, on b random inputs conditioned like the
        first b samples (cycled), on the network's (device, dtype): what batch_size=auto and cpu_threads=auto
        measure."""
        device, dtype = placement
        denoiser_for = self.denoiser_for(net)
        indices = self.indices if len(self.indices) else [0]  # not listed: a range of any n stays lazy

        @torch.no_grad()
        def call(batch: int) -> Tensor:
            denoiser = denoiser_for([indices[i % len(indices)] for i in range(batch)])
            x = torch.randn((batch, *self.sample_shape), device=device, dtype=dtype)
            return denoiser(x, torch.zeros(batch, device=device, dtype=torch.long))

        return call
