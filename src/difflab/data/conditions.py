"""What to generate for a conditional task: the conditions of samples 0..n-1 when sampling a grid or an
evaluation set (balanced class labels, a fixed set of prompts, held-out low-res images), and how a grid lays
them out (one row per class or prompt; super-resolution: input | output pairs)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..diffusion.conditioning import CondFor, label_condition, spread_labels
from ..diffusion.superres import downsample, nearest_upsample, upsample
from ..text import TextTable


@dataclass
class GenerationConditions:
    """cond_for(indices) gives the conditions of those samples; `nrow` is the grid's row width (None: square)."""

    cond_for: CondFor | None
    nrow: int | None = None
    labels: list[int] | None = None
    # (n, C, H, W): what sample i was made from, shown beside it in a grid (super-resolution: its input).
    inputs: Tensor | None = None
    prompts: list[str] | None = None  # the distinct prompts, one grid row each (text-to-image)
    negative_for: CondFor | None = None  # what guidance pushes away from, instead of the unconditional branch


def balanced(
    condition: str | None,
    num_classes: int | None,
    n: int,
    texts: TextTable | None = None,
    text_classes: list[int] | None = None,
) -> GenerationConditions:
    """n samples spread over the task's conditions: for labels, equal contiguous blocks of 0..C-1, so a grid
    with ceil(n / C) columns shows one row per class; for text, likewise over the prompts in `texts` (the
    datamodule's grid_texts, or a user's); when text i names class text_classes[i] (template captions, or
    captions from files of labelled images), the samples' classes are known too, for the conditioning
    accuracy. Unconditional tasks get no conditions."""
    if condition is None:
        return GenerationConditions(None)
    if condition == "labels":
        if not num_classes:
            raise ValueError("a class-conditional task needs num_classes")
        labels = spread_labels(range(num_classes), n)
        return GenerationConditions(label_condition(labels), math.ceil(n / num_classes), labels)
    if condition == "text":
        if texts is None or not len(texts):
            raise ValueError("a text-to-image task needs prompts to sample")
        rows = spread_labels(range(len(texts)), n)
        return GenerationConditions(
            texts.cond_for(rows),
            math.ceil(n / len(texts)),
            labels=None if text_classes is None else [text_classes[row] for row in rows],
            prompts=list(texts.captions),
        )
    raise ValueError(f"no balanced conditions for data.condition={condition!r}")


def superres_conditions(low: Tensor, size: int, per_input: int = 1) -> GenerationConditions:
    """Sample i super-resolves low[i // per_input] ((M, C, h, w) in [-1, 1]) to size x size: its condition is the
    bicubic upsampling the net was trained on. `inputs` holds each sample's input, nearest-upsampled."""
    condition = upsample(low, size)
    shown = nearest_upsample(low, size)

    def cond_for(indices) -> dict[str, Tensor]:
        rows = torch.as_tensor(list(indices), dtype=torch.long) // per_input
        return {"low_res": condition[rows]}

    rows = torch.arange(len(low) * per_input) // per_input
    return GenerationConditions(cond_for, per_input, inputs=shown[rows])


def held_out_superres(data: Any, n: int) -> GenerationConditions:
    """One sample from each of the first n held-out images' low-res versions (cycled when there are fewer), so
    a training run's grids show the same inputs at every step."""
    val = data.dataset_for("val")
    if len(val) == 0:
        raise ValueError(
            f"the held-out split of {data.dataset} is empty: no low-res inputs for the sample grid"
        )
    images = torch.stack([val[i % len(val)][0] for i in range(min(n, len(val)))])
    images = images[torch.arange(n) % len(images)]
    conditions = superres_conditions(downsample(images, data.sr_factor), data.image_size)
    conditions.nrow = None
    return conditions


def grid_conditions(data: Any, n: int) -> GenerationConditions:
    """What a training run's sample grid and scores generate for its datamodule's task: balanced classes, the
    fixed prompts (one per class for template captions), or held-out images' low-res versions."""
    condition = getattr(data, "condition", None)
    if condition == "superres":
        return held_out_superres(data, n)
    texts = getattr(data, "grid_texts", None)
    return balanced(
        condition, getattr(data, "num_classes", None), n, texts, getattr(data, "grid_text_classes", None)
    )


def grid_tiles(conditions: GenerationConditions, images: Tensor) -> tuple[Tensor, int | None]:
    """The tiles of a grid and its row width: the samples, or (input, sample) pairs side by side when the
    conditions carry inputs (nrow then counts pairs, about square when unset)."""
    if conditions.inputs is None:
        return images, conditions.nrow
    inputs = conditions.inputs.to(images.device, images.dtype)
    n = len(images)
    # About square, rows full: the first divisor of n from sqrt(n / 2) pairs on (32 -> 4, 64 -> 8).
    pairs = conditions.nrow or next(
        k for k in range(max(1, math.ceil(math.sqrt(n / 2))), n + 1) if n % k == 0
    )
    return torch.stack([inputs, images], 1).flatten(0, 1), 2 * pairs
