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


class StatsAccumulator:
    """Running float64 sums for mean/covariance plus a uniform reservoir sample of features.

    Sums are taken around a shift (the first batch's mean) so the covariance does not lose precision
    to cancellation when the mean is large relative to the spread. Memory is O(D^2 + keep * D).
    """

    def __init__(self, dim: int, extractor: str, keep_features: int = 0, seed: int = 0) -> None:
        self.dim, self.extractor, self.keep = dim, extractor, keep_features
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)
        self.sample = torch.empty(0, dim, dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed)

    def update(self, features: torch.Tensor) -> None:
        """Add a (N, D) batch of features."""
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
        self._reservoir(f)
        self.n += len(f)

    def _reservoir(self, f: torch.Tensor) -> None:
        """Keep a uniform sample of at most `keep` rows (Algorithm R), so ordered data is not biased."""
        room = max(self.keep - len(self.sample), 0)
        if room:
            self.sample = torch.cat([self.sample, f[:room]])
        rest = f[room:]
        if len(rest) == 0 or self.keep == 0:
            return
        seen = self.n + room + torch.arange(len(rest), dtype=torch.float64)  # rows seen before each
        slot = (torch.rand(len(rest), generator=self.generator, dtype=torch.float64) * (seen + 1)).long()
        hit = slot < self.keep
        self.sample[slot[hit]] = rest[hit]

    def state_dict(self) -> dict[str, Any]:
        """What the accumulator has taken in, to continue from (the reservoir's random state included, so a
        continued run keeps the sample an uninterrupted one keeps)."""
        return {
            "n": self.n,
            "shift": self.shift,
            "sum": self.sum,
            "outer": self.outer,
            "sample": self.sample,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a state_dict() of an accumulator with the same dimension and sample size."""
        if state["sum"].shape != self.sum.shape or len(state["sample"]) > self.keep:
            raise ValueError(
                f"statistics of {len(state['sum'])}-d features keeping {len(state['sample'])} rows do not fit an "
                f"accumulator of {self.dim}-d features keeping {self.keep}"
            )
        self.n, self.shift = int(state["n"]), state["shift"]
        self.sum, self.outer, self.sample = state["sum"], state["outer"], state["sample"]
        self.generator.set_state(state["generator"])

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
