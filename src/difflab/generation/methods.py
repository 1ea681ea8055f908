"""How one batch is made from its denoiser and its samples' generators: sampling from noise, SDEdit (img2img)
or RePaint (inpaint). Result k of an edit is an edit of picture k // per_picture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from ..diffusion import SampleGenerators, Sampler
from ..diffusion.editing import img2img, repaint, repaint_model_calls, strength_timesteps
from ..diffusion.generate import from_noise
from ..diffusion.samplers.base import Denoiser, StepCallback
from ..diffusion.schedule import NoiseSchedule


class Method(Protocol):
    """Makes a batch of `sample_shape` images; `nfe`: network evaluations per sample; `steps`: on_step calls
    per batch (0: none)."""

    nfe: int
    steps: int
    sample_shape: tuple[int, ...]

    def __call__(
        self, denoiser: Denoiser, generators: SampleGenerators, callback: StepCallback | None
    ) -> Tensor: ...

    def settings(self) -> dict[str, Any]: ...


@dataclass
class Sampling:
    """Sample from each sample's own starting noise with `sampler`."""

    sampler: Sampler
    sample_shape: tuple[int, ...]

    @property
    def nfe(self) -> int:
        return self.sampler.nfe

    @property
    def steps(self) -> int:
        return len(self.sampler.timesteps)

    def __call__(
        self, denoiser: Denoiser, generators: SampleGenerators, callback: StepCallback | None
    ) -> Tensor:
        return from_noise(self.sampler, self.sample_shape)(denoiser, generators, callback)

    def settings(self) -> dict[str, Any]:
        return {"nfe": self.nfe}


class _Edit:
    """An edit's results have the shape of its pictures."""

    pictures: Tensor

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.pictures.shape[1:])


def _of_results(pictures: Tensor, generators: SampleGenerators, per_picture: int) -> Tensor:
    """The picture each result of the batch edits: picture k // per_picture for result k."""
    return pictures[torch.as_tensor(generators.indices, dtype=torch.long) // per_picture]


@dataclass
class Img2Img(_Edit):
    """SDEdit: noise each picture to strength·T and denoise it with `sampler`."""

    sampler: Sampler
    pictures: Tensor  # (M, C, H, W) in [-1, 1]
    per_picture: int
    strength: float
    steps: int = 0  # img2img reports no steps

    @property
    def timesteps(self) -> Tensor:
        return strength_timesteps(self.sampler.timesteps, self.sampler.schedule.timesteps, self.strength)

    @property
    def nfe(self) -> int:
        return self.sampler.core.nfe(len(self.timesteps))  # Heun: two calls per step but the last

    def __call__(
        self, denoiser: Denoiser, generators: SampleGenerators, callback: StepCallback | None
    ) -> Tensor:
        images = _of_results(self.pictures, generators, self.per_picture)
        return img2img(self.sampler, denoiser, images, self.strength, generator=generators)

    def settings(self) -> dict[str, Any]:
        return {"strength": self.strength, "start_timestep": int(self.timesteps[0]), "nfe": self.nfe}


@dataclass
class Inpaint(_Edit):
    """RePaint: fill each picture where its mask is 1, keeping the rest exactly."""

    schedule: NoiseSchedule
    prediction_type: str
    pictures: Tensor  # (M, C, H, W) in [-1, 1]
    masks: Tensor  # (1 or M, 1, H, W) of 0/1, 1 = generate
    per_picture: int
    options: dict[str, int]  # RePaint's steps, jump_length, jump_n_sample
    steps: int = 0  # RePaint reports no steps

    @property
    def nfe(self) -> int:
        return repaint_model_calls(**self.options)

    def __call__(
        self, denoiser: Denoiser, generators: SampleGenerators, callback: StepCallback | None
    ) -> Tensor:
        images = _of_results(self.pictures, generators, self.per_picture)
        masks = self.masks if len(self.masks) == 1 else _of_results(self.masks, generators, self.per_picture)
        return repaint(
            denoiser,
            self.schedule,
            images,
            masks,
            prediction_type=self.prediction_type,
            generator=generators,
            **self.options,
        )

    def settings(self) -> dict[str, Any]:
        return {"inpaint": dict(self.options), "nfe": self.nfe}
