"""What a training run generates for its grids and scores: the datamodule describes its task as plain data
(a Task), and grid_conditions turns it into the conditions of samples 0..n-1."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..diffusion.superres import downsample
from ..text import TextTable
from .conditions import Conditions, class_conditions, superres_conditions, text_conditions


@dataclass(frozen=True)
class Task:
    """A dataset's conditioning task as plain data: what its model is conditioned on and what a grid shows."""

    sample_shape: tuple[int, int, int]  # (C, H, W) of the images
    condition: str | None = None  # None (unconditional), "labels", "text" or "superres"
    num_classes: int | None = None  # labels: the number of classes
    prompts: TextTable | None = None  # text: the fixed prompts a grid shows, one row each
    prompt_classes: list[int] | None = None  # text: the class each prompt names (None: not known)
    held_out: Tensor | None = None  # superres: the held-out images whose low-res versions a grid shows
    sr_factor: int | None = None  # superres: the downsampling factor


def grid_conditions(task: Task, n: int) -> Conditions:
    """What a training run's sample grid and scores generate for `task`: n samples balanced over the classes or
    the fixed prompts, or one per held-out image's low-res version (cycled when there are fewer), so the grid
    shows the same inputs at every step. Unconditional tasks get no conditions."""
    if task.condition is None:
        return Conditions()
    if task.condition == "labels":
        if not task.num_classes:
            raise ValueError("a class-conditional task needs num_classes")
        return class_conditions(range(task.num_classes), n)
    if task.condition == "text":
        if task.prompts is None or not len(task.prompts):
            raise ValueError("a text-to-image task needs prompts to sample")
        return text_conditions(task.prompts, n, task.prompt_classes)
    if task.condition == "superres":
        return held_out_superres(task, n)
    raise ValueError(f"no grid conditions for data.condition={task.condition!r}")


def held_out_superres(task: Task, n: int) -> Conditions:
    """One sample from each of the first n held-out images' low-res versions (cycled when there are fewer: sample
    i from image i % their count); only those images' conditions are built, so a huge n streams."""
    if task.held_out is None or task.sr_factor is None:
        raise ValueError("a super-resolution task needs held-out images and sr_factor")
    low = downsample(task.held_out[:n], task.sr_factor)
    conditions = superres_conditions(low, task.sample_shape[-1])
    conditions.nrow = None
    return conditions
