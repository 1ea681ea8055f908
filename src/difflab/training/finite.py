"""Stop on a non-finite loss, and never write non-finite weights or samples: NaN must not reach the disk."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor

HINT = "lower optim.lr, clip gradients (trainer.gradient_clip_val) or check the data"


class NonFiniteError(ValueError):
    """Training produced NaN or inf; a ValueError, so the entry points print one line and exit 2."""


class LossWatch:
    """Notes on the device the first optimizer step whose loss was not finite, without waiting for the device;
    `check` reads the note: one host read, plus under DDP one all-reduce, so that every rank stops together.

    DiffusionModule checks every `check_every_n_steps` optimizer steps (before that step's optimizer update),
    at the last step, and before anything is written: a checkpoint, a sample grid, an FID evaluation. Not after
    every step: a host read per step stalls a GPU (the CPU can no longer queue work ahead) and under DDP an
    all-reduce per step is a collective a single-GPU run would not need. The steps trained on a NaN before the
    check cost only their time: nothing of them reaches the disk. 20 steps is well under a second of a small
    GPU run and far less than the periodic checkpoints and grids, which check anyway.
    """

    def __init__(self, check_every_n_steps: int = 20) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be at least 1 (got {check_every_n_steps})")
        self.check_every_n_steps = check_every_n_steps
        self._first_step: Tensor | None = None  # -1 while every loss so far was finite
        self._first_value: Tensor | None = None

    def record(self, loss: Tensor, step: int) -> None:
        """Note `loss` of optimizer step `step` if it is the first non-finite one (a few device ops, no sync)."""
        loss = loss.detach().float()
        if self._first_step is None:
            self._first_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._first_value = torch.zeros((), device=loss.device)
        first = ~torch.isfinite(loss) & (self._first_step < 0)
        self._first_step = torch.where(first, step, self._first_step)
        self._first_value = torch.where(first, loss, self._first_value)

    def due(self, step: int, max_steps: int) -> bool:
        """Whether to check before the optimizer update of `step`: it ends a period of check_every_n_steps, or
        training (max_steps > 0)."""
        return (step + 1) % self.check_every_n_steps == 0 or 0 < max_steps <= step + 1

    def check(self, trainer: L.Trainer) -> None:
        """Raise NonFiniteError naming the first step (of any DDP rank) whose loss was not finite."""
        first = self._first_step
        if first is None:
            first = torch.full((), -1, dtype=torch.long, device=trainer.strategy.root_device)
        if trainer.world_size > 1:
            never = torch.iinfo(torch.long).max  # a rank with only finite losses must not win the min
            earliest = trainer.strategy.reduce(torch.where(first < 0, never, first), reduce_op="min")
            step = int(earliest)
            step = -1 if step == never else step
        else:
            step = int(first)
        if step < 0:
            return
        # Only now, on the way out, read this rank's own value (nan or inf), if the earliest step was its own.
        shown = float(self._first_value) if int(first) == step else "not finite on another rank"
        raise NonFiniteError(
            f"loss is {shown} at step {step} (training stopped at step {trainer.global_step}; no checkpoint or "
            f"sample grid holds weights from after it); {HINT}"
        )


def check_losses_so_far(module: Any) -> None:
    """Before writing anything from `module`'s weights: its LossWatch checked now, if it has one and trains."""
    watch = getattr(module, "loss_watch", None)
    try:
        trainer = getattr(module, "trainer", None)
    except RuntimeError:  # a LightningModule that no Trainer is attached to
        trainer = None
    if isinstance(watch, LossWatch) and trainer is not None:
        watch.check(trainer)


def _tensors(tree: Any, prefix: str) -> Iterator[tuple[str, Tensor]]:
    if isinstance(tree, Tensor):
        yield prefix, tree
    elif isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, list | tuple):
        for index, value in enumerate(tree):
            yield from _tensors(value, f"{prefix}.{index}" if prefix else str(index))


def _is_sharded(tensor: Tensor) -> bool:
    """True for a DTensor (an FSDP2 shard): its reductions are collectives, so it is read through its local part."""
    return hasattr(tensor, "to_local")


def first_non_finite(tree: Any, prefix: str = "") -> str | None:
    """The dotted name of the first floating-point tensor in nested dicts and lists holding NaN or inf, else None.
    A sharded tensor is checked on this rank's shard; if any was sharded, one all-reduce makes every rank agree
    (a collective per tensor, as DTensor's own `.all()` would make, let a gloo rank abort mid-save)."""
    bad, sharded = None, False
    for name, tensor in _tensors(tree, prefix):
        sharded = sharded or _is_sharded(tensor)
        local = tensor.to_local() if _is_sharded(tensor) else tensor
        if bad is None and local.is_floating_point() and not bool(torch.isfinite(local).all()):
            bad = name
    if sharded and torch.distributed.is_available() and torch.distributed.is_initialized():
        return _agreed_across_ranks(bad)
    return bad


def _agreed_across_ranks(bad: str | None) -> str | None:
    """`bad` where this rank found it, else the name another rank found (one all-reduce; a gather on every rank
    only when some rank found one, so that no rank waits on a collective the others skip)."""
    nccl = "nccl" in str(torch.distributed.get_backend())
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    flag = torch.tensor([0.0 if bad is None else 1.0], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if not flag.item():
        return None
    names: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(names, bad)
    return bad if bad is not None else next(name for name in names if name is not None)


WEIGHT_KEYS = ("state_dict", "current_model_state")  # the EMA weights and, beside them, the raw ones


def check_checkpoint_weights(checkpoint: Mapping[str, Any]) -> None:
    """Raise NonFiniteError before a checkpoint with NaN or inf weights is written. Called on every rank (the
    weights are the same on all), so that under DDP no rank is left waiting for a save that never comes."""
    bad = first_non_finite({k: checkpoint[k] for k in WEIGHT_KEYS if k in checkpoint})
    if bad is not None:
        step = checkpoint.get("global_step", "?")
        raise NonFiniteError(f"refusing to write a checkpoint: {bad} is not finite at step {step}; {HINT}")
