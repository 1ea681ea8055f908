"""Split a fixed set of sample indices across DDP ranks and gather the ranks' rows back.

Rank r takes indices r, r + W, r + 2W, … (W ranks), so the ranks' shares differ in length by at most one
and every rank finishes at about the same time; `gather_in_index_order` puts the rows back as 0, 1, 2, …
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor


def rank_indices(n: int, rank: int, world_size: int) -> list[int]:
    """The indices of 0..n-1 that `rank` of `world_size` works on: rank, rank + W, rank + 2W, …"""
    return list(range(rank, n, world_size))


def interleave(parts: list[Tensor]) -> Tensor:
    """Rows of part r (computed for `rank_indices(n, r, len(parts))`) put back in index order 0..n-1."""
    total = sum(len(p) for p in parts)
    first = parts[0]
    out = torch.empty((total, *first.shape[1:]), dtype=first.dtype, device=first.device)
    for rank, part in enumerate(parts):
        out[rank :: len(parts)] = part
    return out


def gather_by_rank(trainer: L.Trainer, rows: Tensor) -> list[Tensor]:
    """Each rank's `rows` (any count, same trailing shape), as a list indexed by rank, on every rank."""
    if trainer.world_size == 1:
        return [rows]
    lengths = trainer.strategy.all_gather(torch.tensor([len(rows)], device=rows.device)).flatten().tolist()
    padded = torch.zeros((max(lengths), *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[: len(rows)] = rows
    gathered = trainer.strategy.all_gather(padded)  # (W, max, ...): all_gather needs equal shapes
    return [gathered[r, :length] for r, length in enumerate(lengths)]


def gather_in_rank_order(trainer: L.Trainer, rows: Tensor) -> Tensor:
    """All ranks' rows concatenated rank 0 first (where the order of rows does not matter)."""
    return torch.cat(gather_by_rank(trainer, rows))


def gather_in_index_order(trainer: L.Trainer, rows: Tensor) -> Tensor:
    """Rows that each rank computed for its `rank_indices`, as rows 0, 1, 2, … on every rank."""
    return interleave(gather_by_rank(trainer, rows))
