"""What to generate for a conditional task: the conditions of samples 0..n-1 when sampling a grid or an
evaluation set (balanced class labels, …), and how a grid lays them out (one row per class)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..diffusion.conditioning import CondFor, label_condition, spread_labels


@dataclass
class GenerationConditions:
    """cond_for(indices) gives the conditions of those samples; `nrow` is the grid's row width (None: square)."""

    cond_for: CondFor | None
    nrow: int | None = None
    labels: list[int] | None = None


def balanced(condition: str | None, num_classes: int | None, n: int) -> GenerationConditions:
    """n samples spread over the task's conditions: for labels, equal contiguous blocks of 0..C-1, so a grid
    with ceil(n / C) columns shows one row per class. Unconditional tasks get no conditions."""
    if condition is None:
        return GenerationConditions(None)
    if condition == "labels":
        if not num_classes:
            raise ValueError("a class-conditional task needs num_classes")
        labels = spread_labels(range(num_classes), n)
        return GenerationConditions(label_condition(labels), math.ceil(n / num_classes), labels)
    raise ValueError(f"no balanced conditions for data.condition={condition!r}")
