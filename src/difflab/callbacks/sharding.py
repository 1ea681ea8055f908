"""Split a fixed set of sample indices across DDP ranks and gather the results back in order."""

from __future__ import annotations

import math

import lightning as L
from torch import Tensor


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Indices rank, rank + W, rank + 2W, … padded by repeating index 0's slot so every rank has the same
    count (all_gather needs equal shapes); the padding is dropped again by `gather_shards`."""
    per_rank = math.ceil(n / world_size)
    own = list(range(rank, n, world_size))
    return own + [own[-1] if own else 0] * (per_rank - len(own))


def gather_shards(trainer: L.Trainer, images: Tensor, n: int) -> Tensor:
    """All ranks' shards of `shard_indices`, reassembled as images 0..n-1 (on every rank)."""
    if trainer.world_size == 1:
        return images[:n]
    gathered = trainer.strategy.all_gather(images)  # (W, per_rank, ...)
    world, per_rank = gathered.shape[:2]
    # Element j of rank r is sample r + j·W: interleave back to the original order.
    ordered = gathered.transpose(0, 1).reshape(world * per_rank, *gathered.shape[2:])
    return ordered[:n]
