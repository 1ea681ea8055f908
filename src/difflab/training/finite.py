"""Stop on a non-finite loss, and never write non-finite weights or samples: NaN must not reach the disk."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor

HINT = "lower optim.lr, clip gradients (trainer.gradient_clip_val) or check the data"


class NonFiniteError(ValueError):
    """Training produced NaN or inf; a ValueError, so the entry points print one line and exit 2."""


def check_loss(loss: Tensor, step: int, trainer: L.Trainer) -> None:
    """Raise NonFiniteError if `loss` (of any DDP rank) is NaN or inf, before backward lets it into the weights.

    `bool()` waits for the device once per step: an asynchronous check could only raise after the optimizer
    (and the EMA) had taken the bad step. Under DDP the flag is summed over ranks so that every rank stops at
    the same step instead of the others hanging in the gradient all-reduce.
    """
    bad = (~torch.isfinite(loss.detach())).float()
    if trainer.world_size > 1:
        bad = trainer.strategy.reduce(bad, reduce_op="sum")
    if bool(bad > 0):
        value = loss.item()
        shown = "not finite on another rank" if math.isfinite(value) else value
        raise NonFiniteError(f"loss is {shown} at step {step} (training stopped before backward); {HINT}")


def _tensors(tree: Any, prefix: str) -> Iterator[tuple[str, Tensor]]:
    if isinstance(tree, Tensor):
        yield prefix, tree
    elif isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, list | tuple):
        for index, value in enumerate(tree):
            yield from _tensors(value, f"{prefix}.{index}" if prefix else str(index))


def first_non_finite(tree: Any, prefix: str = "") -> str | None:
    """The dotted name of the first floating-point tensor in nested dicts and lists holding NaN or inf, else None."""
    for name, tensor in _tensors(tree, prefix):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


WEIGHT_KEYS = ("state_dict", "current_model_state")  # the EMA weights and, beside them, the raw ones


def check_checkpoint_weights(checkpoint: Mapping[str, Any]) -> None:
    """Raise NonFiniteError before a checkpoint with NaN or inf weights is written. Called on every rank (the
    weights are the same on all), so that under DDP no rank is left waiting for a save that never comes."""
    bad = first_non_finite({k: checkpoint[k] for k in WEIGHT_KEYS if k in checkpoint})
    if bad is not None:
        step = checkpoint.get("global_step", "?")
        raise NonFiniteError(f"refusing to write a checkpoint: {bad} is not finite at step {step}; {HINT}")
