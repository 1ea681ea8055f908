"""What each sample is conditioned on: class labels, prompts or a low-resolution input, tied to the sample's
index like its noise, and what a grid shows of them (one row per class or prompt; super-resolution: inputs)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..diffusion.conditioning import CondFor, SpreadLabels, label_condition, spread_labels
from ..diffusion.superres import nearest_upsample, upsample
from ..text import TextTable


@dataclass
class Conditions:
    """cond_for(indices) gives the conditions of those samples (None: an unconditional model); `nrow` is the
    grid's row width (None: square) and `blocks` how many conditions the samples are spread over in contiguous
    blocks, each shown on a row of its own."""

    cond_for: CondFor | None = None
    nrow: int | None = None
    blocks: int | None = None
    # The class of each sample, when known (conditioning accuracy); worked out when read, so any n costs nothing.
    labels: SpreadLabels | None = None
    # inputs_for(indices): what those samples were made from, shown beside them in a grid (super-resolution).
    inputs_for: Callable[[Sequence[int]], Tensor] | None = None
    inputs: int | None = None  # how many distinct pictures inputs_for draws on (cycled past the last)
    prompts: list[str] | None = None  # the distinct prompts, one grid row each (text-to-image)
    negative_for: CondFor | None = None  # what guidance pushes away from, instead of the unconditional branch
    low_res: Tensor | None = None  # super-resolution: the inputs (M, C, h, w), for superres.consistency


def class_conditions(labels: Sequence[int], n: int) -> Conditions:
    """n samples spread over `labels` in equal contiguous blocks (sample i of class labels[i·k // n]): a grid
    with ceil(n / k) columns shows one row per label."""
    spread = spread_labels(labels, n)
    return Conditions(label_condition(spread), math.ceil(n / len(labels)), len(labels), spread)


def text_conditions(
    texts: TextTable, n: int, text_classes: list[int] | None = None, negative: TextTable | None = None
) -> Conditions:
    """n samples spread over the prompts of `texts` like class_conditions; when text i names class
    text_classes[i], the samples' classes are known too. `negative`: one caption guidance pushes away from."""
    rows = spread_labels(range(len(texts)), n)
    return Conditions(
        texts.cond_for(rows),
        math.ceil(n / len(texts)),
        len(texts),
        # Sample i's prompt is row i·k // n, so its class is text_classes spread the same way.
        labels=None if text_classes is None else spread_labels(text_classes[: len(texts)], n),
        prompts=list(texts.captions),
        negative_for=None if negative is None else negative.cond_for(spread_labels([0], n)),
    )


def superres_conditions(low: Tensor, size: int, per_input: int = 1) -> Conditions:
    """Sample i super-resolves low[i // per_input] ((M, C, h, w) in [-1, 1]; cycled past the last input) to
    size x size: its condition is the bicubic upsampling the net was trained on, read per batch, so any number of
    samples costs only the M inputs. `inputs_for` gives each sample's input, nearest-upsampled."""
    condition = upsample(low, size)
    shown = nearest_upsample(low, size)

    def rows(indices: Sequence[int]) -> Tensor:
        return torch.as_tensor(list(indices), dtype=torch.long) // per_input % len(low)

    def cond_for(indices: Sequence[int]) -> dict[str, Tensor]:
        return {"low_res": condition[rows(indices)]}

    return Conditions(
        cond_for, per_input, inputs_for=lambda indices: shown[rows(indices)], inputs=len(low), low_res=low
    )


def for_each_result(per_picture: Conditions, n: int) -> Conditions:
    """The conditions of every edit from those of one picture's n results: result k edits picture k // n towards
    condition k % n. Labels and prompts stay one picture's (what settings.json records)."""

    def remap(cond_for: CondFor | None) -> CondFor | None:
        return None if cond_for is None else (lambda indices: cond_for([i % n for i in indices]))

    return replace(
        per_picture, cond_for=remap(per_picture.cond_for), negative_for=remap(per_picture.negative_for)
    )
