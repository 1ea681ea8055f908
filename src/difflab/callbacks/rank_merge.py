"""Combine per-rank evaluation results without gathering every feature: bounded memory at any sample count."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from ..metrics.statistics import Stats, StatsAccumulator, merged_sample, stats_from_moments
from .sharding import gather_in_rank_order


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
    n = int(sum_over_ranks(trainer, n_r_t.clone()).item())
    mean = sum_over_ranks(trainer, mean_r * n_r_t) / n
    d = mean_r - mean
    scatter = sum_over_ranks(trainer, scatter_r.to(device) + n_r_t * torch.outer(d, d))
    features = None
    if acc.keep:  # the rows one pass over the whole set in index order keeps, however the ranks shared it
        rows, slots, indices = (
            gather_in_rank_order(trainer, t.to(device)) for t in (acc.rows, acc.slots, acc.indices)
        )
        features = merged_sample(rows.cpu(), slots.cpu(), indices.cpu())[:keep]
    return stats_from_moments(n, mean, scatter, acc.extractor, features)


def sum_over_ranks(trainer: L.Trainer, tensor: Tensor) -> Tensor:
    """The tensor summed over the DDP ranks (itself on one process)."""
    return trainer.strategy.reduce(tensor, reduce_op="sum") if trainer.world_size > 1 else tensor
