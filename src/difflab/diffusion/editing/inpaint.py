"""RePaint inpainting (Lugmayr et al. 2022) with any unconditional denoiser, no retraining."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..sample_noise import NoiseSource, draw_noise
from ..samplers.base import Denoiser
from ..samplers.ddpm import DDPMSampler
from ..schedule import NoiseSchedule
from .jump_schedule import jump_schedule
from .placement import place


def expand_mask(mask: Tensor, image: Tensor) -> Tensor:
    """A boolean mask of image's shape (True = generate) from a (N or 1, 1 or C, H, W) mask of 0/1."""
    n, c, h, w = image.shape
    if (
        mask.ndim != 4
        or mask.shape[0] not in (1, n)
        or mask.shape[1] not in (1, c)
        or mask.shape[2:] != (h, w)
    ):
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not fit images of shape {tuple(image.shape)}; "
            f"expected ({n} or 1, 1 or {c}, {h}, {w})"
        )
    return (mask.to(image.device) > 0.5).expand_as(image)


@torch.no_grad()
def repaint(
    model: Denoiser,
    schedule: NoiseSchedule,
    image: Tensor,
    mask: Tensor,
    steps: int = 250,
    jump_length: int = 10,
    jump_n_sample: int = 10,
    prediction_type: str = "epsilon",
    clip_x0: float | None = 1.0,
    generator: NoiseSource = None,
    timestep_spacing: str = "leading",
) -> Tensor:
    """Fill the pixels where mask is 1 so they agree with the kept pixels (mask 0) of image in [-1, 1].

    Each step down noises the kept pixels to the new level with q(x_t | x_0) and takes a DDPM posterior
    step for the rest; the jumps back up (`jump_schedule`) let the generated part re-harmonise with the
    kept part. Kept pixels of the result equal `image` exactly. With `SampleGenerators` (one per picture)
    each result depends only on its own picture, mask and generator, not on the batch.
    """
    # The DDPM sampler over the same grid supplies the posterior step between any two timesteps.
    ddpm = DDPMSampler(
        schedule,
        steps=steps,
        prediction_type=prediction_type,
        timestep_spacing=timestep_spacing,
        clip_x0=clip_x0,
    )
    image = place(image, model)
    device, dtype = image.device, image.dtype
    generate = expand_mask(mask, image)
    ascending = ddpm.timesteps.flip(0).tolist()

    def timestep(level: int) -> int:
        return -1 if level < 0 else ascending[level]

    def noise() -> Tensor:
        return draw_noise(image.shape, generator, device, dtype)

    def known(t: int) -> Tensor:
        """The kept pixels at noise level t, with fresh noise (the image itself at t = -1)."""
        if t < 0:
            return image
        t_batch = torch.full((image.shape[0],), t, device=device, dtype=torch.long)
        return schedule.q_sample(image, t_batch, noise())

    path = jump_schedule(len(ascending), jump_length, jump_n_sample)
    # Start from pure noise where we generate; the kept pixels are noised to the same level so the
    # first model call already sees a consistent x_t.
    x = torch.where(generate, noise(), known(timestep(path[0])))
    for here, there in zip(path, path[1:], strict=False):
        t, t_next = timestep(here), timestep(there)
        if there < here:
            x = torch.where(generate, ddpm.step(model, x, t, t_next, generator), known(t_next))
        else:
            # Jump back up with the forward process q(x_{t_next} | x_t): a ratio of cumulative alphas.
            ratio = schedule.alpha_bar(t_next) / schedule.alpha_bar(t)
            x = math.sqrt(ratio) * x + math.sqrt(1.0 - ratio) * noise()
    # The last step already wrote the image there; this makes "kept pixels are exact" a guarantee.
    return torch.where(generate, x, image)
