"""Streaming feature statistics (mean, covariance, a bounded feature sample) over uint8 batches."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from difflab.metrics.extractors import FeatureExtractor

# KID and precision/recall need raw features; the sample kept for them is capped at this many rows
# (10k x 2048 float64 is 160 MB), while mean and covariance always use every image.
DEFAULT_KEEP_FEATURES = 10_000


@dataclass(frozen=True)
class Stats:
    """Feature statistics of one image set: mean (D,), covariance (D, D), count, optional sample (M, D)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    extractor: str
    features: np.ndarray | None = None


def reservoir_slots(indices: torch.Tensor, keep: int, seed: int) -> torch.Tensor:
    """Where Algorithm R puts row `i` of a set in a sample of `keep` rows: slot i while the sample fills, then a
    uniform slot in [0, i] (kept when below `keep`). The uniform is a hash of (seed, i) alone (splitmix64), so which
    rows are kept depends neither on the batches they came in nor on the process that saw them: before, each DDP
    rank drew its own, and the FID callback's KID and precision/recall differed from one process's."""
    i = indices.to(torch.int64).numpy().astype(np.uint64)
    with np.errstate(over="ignore"):  # wrapping uint64 arithmetic is the hash
        z = i * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    uniform = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    slots = np.floor(uniform * (i.astype(np.float64) + 1)).astype(np.int64)
    return torch.from_numpy(np.where(i < keep, i.astype(np.int64), slots))


def merged_sample(rows: torch.Tensor, slots: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The reservoir of several accumulators that each saw part of one set (their rows, slots and row indices,
    concatenated): in each slot the row of the highest index, which a single pass in index order leaves there;
    ordered by slot."""
    order = torch.argsort(indices, stable=True)
    winner: dict[int, int] = {}
    for position in order.tolist():  # ascending index: a later row replaces an earlier one in its slot
        winner[int(slots[position])] = position
    return rows[[winner[slot] for slot in sorted(winner)]] if winner else rows[:0]


class StatsAccumulator:
    """Running float64 sums for mean/covariance plus a uniform reservoir sample of features.

    Sums are taken around a shift (the first batch's mean) so the covariance does not lose precision
    to cancellation when the mean is large relative to the spread. Memory is O(D^2 + keep * D). The sample is
    Algorithm R's over the rows in index order (reservoir_slots), whatever the batches or processes.
    """

    def __init__(self, dim: int, extractor: str, keep_features: int = 0, seed: int = 0) -> None:
        self.dim, self.extractor, self.keep, self.seed = dim, extractor, keep_features, seed
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)
        # The kept rows (in the order they were first kept), each one's reservoir slot and its index in the set.
        self.rows = torch.empty(0, dim, dtype=torch.float64)
        self.slots = torch.empty(0, dtype=torch.int64)
        self.indices = torch.empty(0, dtype=torch.int64)

    @property
    def sample(self) -> torch.Tensor:
        """The kept rows ordered by slot: the feature sample KID and precision/recall use."""
        return self.rows[torch.argsort(self.slots)]

    def update(self, features: torch.Tensor, indices: torch.Tensor | None = None) -> None:
        """Add a (N, D) batch of features: rows `indices` of the set (default: the next N, in order)."""
        f = features.detach().to("cpu", torch.float64)
        if f.dim() != 2 or f.shape[1] != self.dim:
            raise ValueError(f"expected features (N, {self.dim}), got {tuple(f.shape)}")
        if len(f) == 0:
            return
        if self.shift is None:
            self.shift = f.mean(0)
        c = f - self.shift
        self.sum += c.sum(0)
        self.outer += c.T @ c
        if self.keep:
            rows = torch.arange(self.n, self.n + len(f)) if indices is None else indices.detach().cpu()
            self._reservoir(f, rows.to(torch.int64))
        self.n += len(f)

    def _reservoir(self, f: torch.Tensor, indices: torch.Tensor) -> None:
        """Keep a uniform sample of at most `keep` rows (Algorithm R), so ordered data is not biased."""
        slots = reservoir_slots(indices, self.keep, self.seed)
        held = dict(zip(self.slots.tolist(), range(len(self.slots)), strict=True))
        added: dict[int, int] = {}  # slot -> row of this batch, for slots no earlier batch filled
        for row in torch.nonzero(slots < self.keep).flatten().tolist():
            slot, index = int(slots[row]), int(indices[row])
            if slot in held:
                if index > int(self.indices[held[slot]]):  # a later row of the set replaces it
                    self.rows[held[slot]], self.indices[held[slot]] = f[row], index
            elif slot not in added or index > int(indices[added[slot]]):
                added[slot] = row
        if added:  # one copy a batch: the sample grows to `keep` rows of D features
            new = torch.tensor(list(added.values()), dtype=torch.int64)
            self.rows = torch.cat([self.rows, f[new]])
            self.slots = torch.cat([self.slots, slots[new]])
            self.indices = torch.cat([self.indices, indices[new]])

    def state_dict(self) -> dict[str, Any]:
        """What the accumulator has taken in, to continue from (the reservoir's random state included, so a
        continued run keeps the sample an uninterrupted one keeps)."""
        return {
            "n": self.n,
            "shift": self.shift,
            "sum": self.sum,
            "outer": self.outer,
            "rows": self.rows,
            "slots": self.slots,
            "indices": self.indices,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a state_dict() of an accumulator with the same dimension and sample size."""
        if "slots" not in state:  # kept before reservoir_slots: its sample was drawn otherwise
            raise ValueError("statistics kept by an earlier difflab, with another feature sample")
        if state["sum"].shape != self.sum.shape or len(state["rows"]) > self.keep:
            raise ValueError(
                f"statistics of {len(state['sum'])}-d features keeping {len(state['rows'])} rows do not fit an "
                f"accumulator of {self.dim}-d features keeping {self.keep}"
            )
        self.n, self.shift = int(state["n"]), state["shift"]
        self.sum, self.outer = state["sum"], state["outer"]
        self.rows, self.slots, self.indices = state["rows"], state["slots"], state["indices"]

    def moments(self) -> tuple[int, torch.Tensor, torch.Tensor]:
        """(n, mean (D,), scatter about the mean (D, D)): what parallel shards combine (see merge_moments)."""
        if self.n == 0:
            return (
                0,
                torch.zeros(self.dim, dtype=torch.float64),
                torch.zeros(self.dim, self.dim, dtype=torch.float64),
            )
        assert self.shift is not None
        mean_c = self.sum / self.n
        return self.n, mean_c + self.shift, self.outer - self.n * torch.outer(mean_c, mean_c)

    def result(self) -> Stats:
        """Mean, unbiased covariance and the kept sample as numpy float64."""
        n, mean, scatter = self.moments()
        return stats_from_moments(n, mean, scatter, self.extractor, self.sample if self.keep else None)


def stats_from_moments(
    n: int, mean: torch.Tensor, scatter: torch.Tensor, extractor: str, features: torch.Tensor | None = None
) -> Stats:
    """Stats from a count, a mean and the scatter matrix about it (covariance = scatter / (n - 1))."""
    if n < 2:
        raise ValueError(f"need at least 2 images for a covariance, got {n}")
    return Stats(
        mu=mean.cpu().numpy(),
        sigma=(scatter / (n - 1)).cpu().numpy(),
        n=int(n),
        extractor=extractor,
        features=None if features is None else features.cpu().numpy(),
    )


def compute_statistics(
    batches: Iterable[torch.Tensor],
    extractor: FeatureExtractor,
    keep_features: int = DEFAULT_KEEP_FEATURES,
    max_images: int | None = None,
    seed: int = 0,
) -> Stats:
    """Run uint8 image batches (N, C, H, W) through the extractor and summarise their features.

    keep_features=0 skips the feature sample (enough for FD; KID and precision/recall need it).
    max_images stops after that many images (the last batch is truncated).
    """
    acc = StatsAccumulator(extractor.dim, extractor.name, keep_features, seed)
    for images in batches:
        if max_images is not None:
            images = images[: max_images - acc.n]
        if len(images):
            acc.update(extractor(images))
        if max_images is not None and acc.n >= max_images:
            break
    return acc.result()
