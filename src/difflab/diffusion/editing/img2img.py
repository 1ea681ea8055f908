"""SDEdit image-to-image (Meng et al. 2021): noise a picture part of the way, then denoise it back."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from ...value_rules import check_strength
from ..sample_noise import NoiseSource, draw_noise
from ..samplers.base import Denoiser, Sampler
from ..samplers.continuous import SigmaDenoiser, SigmaSampler
from .placement import place


def strength_timesteps(timesteps: Tensor, num_train_timesteps: int, strength: float) -> Tensor:
    """The tail of a sampler's descending timesteps that SDEdit runs: those noised at most to the strength,
    (t + 1) / T ≤ strength, or the least noisy one alone. diffusers' int(steps·strength) steps from the grid's end
    are the same where steps·strength is whole, one fewer otherwise (0.59 at 50 steps: 29, here 30)."""
    check_strength(strength)
    strength = float(strength)
    kept = timesteps[timesteps <= round(strength * num_train_timesteps) - 1]
    if len(kept):
        return kept
    # A tiny strength still runs the last, least noisy step, so the output is always a model output; said, as
    # that step noises more than asked (strength 1e-9 moved pixels by 90/255 at 10 steps, without a word).
    least = int(timesteps[-1])
    # A grid that reaches the data: its last step noises next to nothing.
    if least == 0:
        return timesteps[-1:]
    warnings.warn(
        f"strength={strength:g} is below the sampler's least noisy step (t={least}, strength "
        f"{(least + 1) / num_train_timesteps:g}): that step runs; more sampler.steps give a finer grid",
        stacklevel=1,
    )
    return timesteps[-1:]


@torch.no_grad()
def img2img(
    sampler: Sampler,
    model: Denoiser,
    image: Tensor,
    strength: float,
    generator: NoiseSource = None,
) -> Tensor:
    """Edit image (in [-1, 1]) towards the model's data: noise it to level strength·T, denoise with sampler.

    Small strengths keep the layout and details of the picture; strength 1 starts from (almost) pure
    noise at the sampler's top timestep, so the picture is ignored. With `SampleGenerators` (one per
    picture) each result depends only on its own picture and generator, not on the batch.
    """
    timesteps = strength_timesteps(sampler.timesteps, sampler.schedule.timesteps, strength)
    image = place(image, model)
    sigmas = sampler.formulation.sigma_grid(timesteps)
    return sdedit(sampler.core, sampler.denoiser(model), image, sigmas, generator)


@torch.no_grad()
def sdedit(
    sampler: SigmaSampler,
    denoiser: SigmaDenoiser,
    image: Tensor,
    sigmas: Sequence[float] | Tensor,
    generator: NoiseSource = None,
) -> Tensor:
    """SDEdit on the core, for any denoiser D(x, σ): noise image to x = image + σ_0 z, walk `sigmas` down."""
    x = image + float(sigmas[0]) * draw_noise(image.shape, generator, image.device, image.dtype)
    return sampler.sample(denoiser, x, sigmas, generator)
