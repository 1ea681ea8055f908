"""RePaint inpainting (Lugmayr et al. 2022) with any unconditional denoiser, no retraining."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..sample_noise import NoiseSource, draw_noise
from ..samplers.base import Denoiser
from ..samplers.continuous import SigmaDenoiser, SigmaSampler
from ..samplers.ddpm import DDPM, DDPMSampler
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
    timestep_spacing: str | None = None,  # None: the schedule's own grid (a DDPM table: leading)
) -> Tensor:
    """Fill the pixels where mask is 1 so they agree with the kept pixels (mask 0) of image in [-1, 1].

    The integer-timestep face of `repaint_sigmas`: a network model(x_t, t) on `schedule`, over the timesteps a
    DDPM sampler of `steps` steps visits. Kept pixels of the result equal `image` exactly. With
    `SampleGenerators` (one per picture) each result depends only on its own picture, mask and generator.
    """
    ddpm = DDPMSampler(
        schedule,
        steps=steps,
        prediction_type=prediction_type,
        timestep_spacing=timestep_spacing,
        clip_x0=clip_x0,
    )
    image = place(image, model)
    levels = [ddpm.formulation.sigma(int(t)) for t in ddpm.timesteps.flip(0)]
    # Pure noise on the VP scale, x_T ~ N(0, I), is x_T/α on the core's.
    start = draw_noise(image.shape, generator, image.device, image.dtype) * math.sqrt(1.0 + levels[-1] ** 2)
    return repaint_sigmas(
        ddpm.denoiser(model), image, mask, levels, jump_length, jump_n_sample, generator, start, ddpm.core
    )


@torch.no_grad()
def repaint_sigmas(
    denoiser: SigmaDenoiser,
    image: Tensor,
    mask: Tensor,
    levels: Sequence[float],
    jump_length: int = 10,
    jump_n_sample: int = 10,
    generator: NoiseSource = None,
    start: Tensor | None = None,
    step: SigmaSampler | None = None,
) -> Tensor:
    """RePaint on the core: fill where mask is 1 with any denoiser D(x, σ), over the noise `levels` (ascending).

    Each step down noises the kept pixels to the new level (image + σ z) and takes a DDPM posterior step (`step`,
    default DDPM()) for the rest; the jumps back up (`jump_schedule`, forward noise of variance σ'² − σ²) let the
    generated part re-harmonise with the kept part. `start`: the generated part's starting point at the top
    level (default levels[-1]·z).
    """
    step = DDPM() if step is None else step
    device, dtype = image.device, image.dtype
    generate = expand_mask(mask, image)

    def sigma(level: int) -> float:
        return 0.0 if level < 0 else float(levels[level])

    def noise() -> Tensor:
        return draw_noise(image.shape, generator, device, dtype)

    def known(s: float) -> Tensor:
        """The kept pixels at noise level s, with fresh noise (the image itself at s = 0)."""
        return image if s == 0 else image + s * noise()

    path = jump_schedule(len(levels), jump_length, jump_n_sample)
    top = sigma(path[0])
    # The kept pixels are noised to the same level, so the first call of D already sees a consistent x.
    x = torch.where(generate, top * noise() if start is None else start, known(top))
    for here, there in zip(path, path[1:], strict=False):
        s, s_next = sigma(here), sigma(there)
        if there < here:
            x = torch.where(generate, step.step(denoiser, x, s, s_next, generator), known(s_next))
        else:
            x = x + math.sqrt(s_next**2 - s**2) * noise()  # back up with the forward process
    # The last step already wrote the image there; this makes "kept pixels are exact" a guarantee.
    return torch.where(generate, x, image)
