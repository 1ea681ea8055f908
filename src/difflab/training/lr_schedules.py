"""Learning-rate schedules built per optimizer step (configured with `_partial_: true`)."""

from __future__ import annotations

import math
from typing import Any

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


def set_the_scheduled_lr(trainer: Any) -> None:
    """Each group's LR set to what this run's schedule gives at its step. A resume restores the optimizer with
    the LR the checkpoint's schedule had set, so a changed schedule took effect a step late, and with none at
    all the old one's last LR stayed for good (a warm-up's 3/200 of optim.lr). Unchanged otherwise: the same
    product as the schedule's own. A schedule other than a LambdaLR (which steps from the LR it finds) is left
    as restored. Without a schedule, the LR configured (the optimizer's default, which no restore changes)."""
    optimizer = trainer.optimizers[0]
    scheduler = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
    if scheduler is None:
        if (
            optimizer.defaults.get("lr") is None
        ):  # an optimizer without a configured LR: nothing to go back to
            return
        lrs = [optimizer.defaults["lr"]] * len(optimizer.param_groups)
    elif isinstance(scheduler, LambdaLR):
        # A schedule the checkpoint did not have (lr_scheduler=none before) starts at its step 0: moved to the
        # resumed step, as one restored is (review: before, warm-up's first LR at step 2).
        scheduler.last_epoch = trainer.global_step
        lrs = [
            base * factor(scheduler.last_epoch)
            for factor, base in zip(scheduler.lr_lambdas, scheduler.base_lrs, strict=True)
        ]
    else:
        return
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
