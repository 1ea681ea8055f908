"""Learning-rate schedules built per optimizer step (configured with `_partial_: true`)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def linear_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int = 0) -> LambdaLR:
    """Linear warm-up from 0 to the base LR over `warmup_steps`, then constant (the DDPM paper's recipe)."""
    warmup_steps = max(int(warmup_steps), 0)
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0)


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int = 0,
    total_steps: int = 100_000,
    min_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warm-up, then cosine decay to min_ratio × base LR at total_steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
