"""What to generate for a conditional task: the conditions of samples 0..n-1 when sampling a grid or an
evaluation set (balanced class labels, a fixed set of prompts), and how a grid lays them out (one row per class
or prompt)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..diffusion.conditioning import CondFor, label_condition, spread_labels
from ..text import TextTable


@dataclass
class GenerationConditions:
    """cond_for(indices) gives the conditions of those samples; `nrow` is the grid's row width (None: square)."""

    cond_for: CondFor | None
    nrow: int | None = None
    labels: list[int] | None = None
    prompts: list[str] | None = None  # the distinct prompts, one grid row each (text-to-image)
    negative_for: CondFor | None = None  # what guidance pushes away from, instead of the unconditional branch


def balanced(
    condition: str | None, num_classes: int | None, n: int, texts: TextTable | None = None
) -> GenerationConditions:
    """n samples spread over the task's conditions: for labels, equal contiguous blocks of 0..C-1, so a grid
    with ceil(n / C) columns shows one row per class; for text, likewise over the prompts in `texts` (the
    datamodule's grid_texts, or a user's). Unconditional tasks get no conditions."""
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
            texts.cond_for(rows), math.ceil(n / len(texts)), prompts=list(texts.captions)
        )
    raise ValueError(f"no balanced conditions for data.condition={condition!r}")
