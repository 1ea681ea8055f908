"""What generation reads of a trained model: its conditioning and the settings it was trained with. A
difflab.checkpoint.LoadedModel and a DiffusionPipeline both are one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..diffusion.schedule import NoiseSchedule


class TrainedModel(Protocol):
    """A trained denoiser's schedule, prediction type and stored config (plain data), and what they say."""

    schedule: NoiseSchedule
    prediction_type: str
    config: Mapping[str, Any]
    weights: str  # "ema" or "raw"
    global_step: int

    @property
    def condition(self) -> str | None: ...

    @property
    def num_classes(self) -> int | None: ...

    @property
    def sample_shape(self) -> tuple[int, int, int]: ...


def model_kind(model: TrainedModel) -> str:
    """What a model generates from, in words: 'an unconditional model', 'a class-conditional model (10 classes)'."""
    kinds = {
        None: "an unconditional model",
        "labels": f"a class-conditional model ({model.num_classes} classes)",
        "text": "a text-to-image model",
        "superres": "a super-resolution model",
    }
    return kinds.get(model.condition, f"a {model.condition}-conditioned model")


def generated_shape(model: TrainedModel) -> tuple[int, int, int]:
    """What the denoiser makes: a latent diffusion model's latent shape (it has a LatentSpace), else its images'."""
    latents = getattr(model, "latents", None)
    return tuple(model.sample_shape) if latents is None else latents.latent_shape


def sr_factor(model: TrainedModel) -> int:
    """A super-resolution model's upscaling factor (the data's sr_factor it was trained with)."""
    return int(model.config["data"]["sr_factor"])


def low_res_shape(model: TrainedModel) -> tuple[int, int, int]:
    """The (C, h, w) of a super-resolution model's inputs: its image size divided by its factor."""
    c, h, w = model.sample_shape
    factor = sr_factor(model)
    return (c, h // factor, w // factor)


def recipe_threads(model: TrainedModel) -> int | None:
    """The CPU threads the model's recipe trained with (cpu_threads in its config), when a whole number >= 1: a
    checkpoint is data, anything else is ignored."""
    threads = model.config.get("cpu_threads")
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1 else None
