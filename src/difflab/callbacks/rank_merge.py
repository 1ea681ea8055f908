"""Combine per-rank evaluation results without gathering every feature: bounded memory at any sample count."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from ..metrics.statistics import Stats, StatsAccumulator, stats_from_moments


def merge_statistics(trainer: L.Trainer, acc: StatsAccumulator, keep: int) -> Stats:
    """Every rank's running statistics combined into one Stats, on every rank.

    Means and scatter matrices are all-reduced (Chan et al.'s parallel update: the scatter about the global
    mean is Σ scatter_r + n_r (μ_r − μ)(μ_r − μ)ᵀ), so the traffic is O(D²) whatever the sample count; only the
    feature samples kept for KID and precision/recall (at most `keep` rows in all) are gathered.
    """
    device = trainer.strategy.root_device
    n_r, mean_r, scatter_r = acc.moments()
    n_r_t = torch.tensor(float(n_r), dtype=torch.float64, device=device)
    mean_r = mean_r.to(device)
    n = int(_sum(trainer, n_r_t.clone()).item())
    mean = _sum(trainer, mean_r * n_r_t) / n
    d = mean_r - mean
    scatter = _sum(trainer, scatter_r.to(device) + n_r_t * torch.outer(d, d))
    features = None
    if acc.keep:
        features = gather_in_rank_order(trainer, acc.sample.to(device))[:keep]
    return stats_from_moments(n, mean, scatter, acc.extractor, features)


def _sum(trainer: L.Trainer, tensor: Tensor) -> Tensor:
    return trainer.strategy.reduce(tensor, reduce_op="sum") if trainer.world_size > 1 else tensor


def _gather_varlen(trainer: L.Trainer, rows: Tensor) -> list[Tensor]:
    """Each rank's `rows` (any count, same trailing shape), as a list indexed by rank, on every rank."""
    if trainer.world_size == 1:
        return [rows]
    lengths = trainer.strategy.all_gather(torch.tensor([len(rows)], device=rows.device)).flatten().tolist()
    padded = torch.zeros((max(lengths), *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[: len(rows)] = rows
    gathered = trainer.strategy.all_gather(padded)  # (W, max, ...): all_gather needs equal shapes
    return [gathered[r, :length] for r, length in enumerate(lengths)]


def gather_in_rank_order(trainer: L.Trainer, rows: Tensor) -> Tensor:
    """All ranks' rows concatenated rank 0 first."""
    return torch.cat(_gather_varlen(trainer, rows))


def gather_in_index_order(trainer: L.Trainer, rows: Tensor) -> Tensor:
    """Rows that rank r computed for indices r, r + W, r + 2W, … put back in index order 0, 1, 2, …"""
    parts = _gather_varlen(trainer, rows)
    total = sum(len(p) for p in parts)
    out = torch.empty((total, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    for rank, part in enumerate(parts):
        out[rank :: len(parts)] = part
    return out
