"""Conditions as data: a dict of per-sample tensors that a denoiser `model(x_t, t, cond)` was built to take.

Keys (each tensor's first dimension is the batch):
  labels       (N,) long        class indices, for a class-conditional net
  text         (N, L, D) float  per-token states of a frozen text encoder (cross-attention)
  text_mask    (N, L) bool      which tokens are real (False: padding)
  text_pooled  (N, D) float     the pooled sentence embedding (added to the time embedding)
  low_res      (N, C, H, W)     a low-resolution image upsampled to the output size (super-resolution)
  drop         (N,) bool        True: ignore labels and text for this sample (the unconditional branch)

`drop` is how one network is both conditional and unconditional: the net swaps in its own learned "no
condition" embeddings where it is set. Training sets it at random (condition dropout); classifier-free
guidance sets it for the unconditional half of its batch. A low-resolution input is never dropped.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Cond = dict[str, Tensor]
# The conditions of the samples with the given indices (absolute sample indices, as in `generate`).
CondFor = Callable[[Sequence[int]], Cond]

DROPPABLE = ("labels", "text", "text_mask", "text_pooled")


def batch_size(cond: Cond) -> int:
    return len(next(iter(cond.values())))


def select(cond: Cond, rows: Tensor | Sequence[int] | slice) -> Cond:
    """The conditions of some rows of a batch."""
    return {key: value[rows] for key, value in cond.items()}


def concat(first: Cond, second: Cond) -> Cond:
    """Two batches of conditions stacked, first then second (the keys must match)."""
    if first.keys() != second.keys():
        raise ValueError(f"cannot stack conditions with keys {sorted(first)} and {sorted(second)}")
    return {key: torch.cat([first[key], second[key]]) for key in first}


def with_drop(cond: Cond, drop: Tensor) -> Cond:
    """cond with `drop` (N,) bool marking the samples whose labels/text are ignored (OR-ed with any set)."""
    drop = drop.to(device=next(iter(cond.values())).device, dtype=torch.bool)
    if "drop" in cond:
        drop = drop | cond["drop"]
    return {**cond, "drop": drop}


def unconditional(cond: Cond) -> Cond:
    """The same batch with every droppable condition dropped: the unconditional branch of guidance."""
    return with_drop(cond, torch.ones(batch_size(cond), dtype=torch.bool))


def random_drop(cond: Cond, prob: float, generator: torch.Generator | None = None) -> Cond:
    """Condition dropout for training: each sample's labels/text dropped with probability `prob`."""
    if prob <= 0 or not any(key in cond for key in DROPPABLE):
        return cond
    device = next(iter(cond.values())).device
    drop = torch.rand(batch_size(cond), device=device, generator=generator) < prob
    return with_drop(cond, drop)


def to_device(cond: Cond, device: torch.device, dtype: torch.dtype | None = None) -> Cond:
    """Tensors moved to `device`; floating ones cast to `dtype` when given (labels and masks keep theirs)."""
    return {
        key: value.to(device, dtype if dtype is not None and value.is_floating_point() else None)
        for key, value in cond.items()
    }


class SpreadLabels(Sequence[int]):
    """n labels taken from `labels` in equal, contiguous blocks (sample i gets labels[i·k // n]), each worked out
    when read: a huge n (evaluate.py streams its samples) costs nothing until its samples are made."""

    def __init__(self, labels: Sequence[int], n: int) -> None:
        if len(labels) == 0:
            raise ValueError("no labels to spread")
        self.classes = [int(label) for label in labels]  # the labels spread, in order
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # an int gives one label, a slice a list of them
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        i = operator.index(i)
        if not -self.n <= i < self.n:
            raise IndexError(f"sample {i} of {self.n}")
        return self.classes[(i % self.n) * len(self.classes) // self.n]

    def __eq__(self, other: object) -> bool:  # equal to any sequence of the same labels, as a list would be
        if not isinstance(other, Sequence) or isinstance(other, str) or len(other) != len(self):
            return False
        return all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # equal to lists, so unhashable like them

    def __repr__(self) -> str:
        return f"SpreadLabels({self.classes}, n={self.n})"


def spread_labels(labels: Sequence[int], n: int) -> SpreadLabels:
    """n labels taken from `labels` in equal, contiguous blocks (sample i gets labels[i·k // n]): a grid with
    n/k columns shows one row per label. Read lazily (see SpreadLabels); list() them where all n are needed."""
    return SpreadLabels(labels, n)


def rows_of(table: Sequence[int], indices: Sequence[int]) -> Tensor:
    """table[i] for each sample index i of a batch, as a LongTensor: only the batch's entries are read."""
    return torch.as_tensor([int(table[i]) for i in indices], dtype=torch.long)


def label_condition(labels: Sequence[int]) -> CondFor:
    """The conditions of samples 0..len(labels)-1: sample i is of class labels[i] (read per batch, so `labels`
    may be a lazy SpreadLabels of any length)."""

    def cond_for(indices: Sequence[int]) -> Cond:
        return {"labels": rows_of(labels, indices)}

    return cond_for
