"""Reference statistics cached on disk as .npz, keyed by dataset, split, resolution and extractor."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from difflab.io.npz_cache import Arrays, cached_npz, write_npz
from difflab.metrics.extractors import FeatureExtractor
from difflab.metrics.statistics import DEFAULT_KEEP_FEATURES, Stats, compute_statistics

log = logging.getLogger("difflab")

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ReferenceKey:
    """What identifies a set of reference statistics; num_images=None means the whole split."""

    dataset: str
    split: str
    resolution: int
    extractor: str
    num_images: int | None = None

    def filename(self) -> str:
        """File name such as 'cifar10-train-32px-efficientnet_lite0-all.npz' (unsafe chars become '_')."""
        parts = [
            self.dataset,
            self.split,
            f"{self.resolution}px",
            self.extractor,
            str(self.num_images or "all"),
        ]
        return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts) + ".npz"


# What a user changes to put the metrics cache elsewhere (the reference statistics, the conditioning classifiers).
CACHE_SETTING = "metrics.cache_dir (or $DIFFLAB_CACHE)"


def default_cache_dir() -> Path:
    """$DIFFLAB_CACHE/fid_stats if DIFFLAB_CACHE is set, else ~/.cache/difflab/fid_stats."""
    root = os.environ.get("DIFFLAB_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "difflab") / "fid_stats"


def stats_arrays(stats: Stats) -> dict[str, np.ndarray]:
    """The arrays of a statistics file."""
    arrays = {
        "mu": stats.mu,
        "sigma": stats.sigma,
        "n": np.int64(stats.n),
        "extractor": np.str_(stats.extractor),
        "version": np.int64(FORMAT_VERSION),
    }
    if stats.features is not None:
        arrays["features"] = stats.features.astype(np.float32)  # halves the file; KID/PRC don't need float64
    return arrays


def stats_from_arrays(z: Arrays, path: Path) -> Stats:
    """The statistics of a file's arrays; ValueError for another cache format."""
    if int(z["version"]) != FORMAT_VERSION:
        raise ValueError(f"{path}: cache format {int(z['version'])}, expected {FORMAT_VERSION}")
    features = z["features"].astype(np.float64) if "features" in z.files else None
    return Stats(
        mu=z["mu"], sigma=z["sigma"], n=int(z["n"]), extractor=str(z["extractor"]), features=features
    )


def save_stats(stats: Stats, path: Path) -> None:
    """Write stats atomically, so readers never see half a file."""
    write_npz(path, stats_arrays(stats))


def load_stats(path: Path) -> Stats:
    """Read stats written by save_stats."""
    with np.load(path, allow_pickle=False) as z:
        return stats_from_arrays(z, path)


def reference_statistics(
    key: ReferenceKey,
    batches_fn: Callable[[], Iterable[torch.Tensor]],
    extractor: FeatureExtractor,
    cache_dir: str | Path | None = None,
    keep_features: int = DEFAULT_KEEP_FEATURES,
) -> tuple[Stats, bool]:
    """Return (stats, hit): read the cached file, or compute from batches_fn() and write it once.

    batches_fn is called only on a miss; it yields uint8 (N, C, H, W) batches of the reference set.
    An unreadable or outdated file (or one without a feature sample of the size asked for) counts as a miss and is
    overwritten.
    """
    if key.extractor != extractor.name:
        raise ValueError(f"key is for extractor {key.extractor!r} but got {extractor.name!r}")
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = path / key.filename()

    def parse(z: Arrays) -> Stats | None:
        stats = stats_from_arrays(z, path)
        kept = 0 if stats.features is None else len(stats.features)
        # A sample of another size (a run with other metrics.keep_features wrote the file) is a miss: before, it
        # was used, and KID and precision/recall changed with whichever run had cached the reference.
        return stats if keep_features == 0 or kept == min(keep_features, stats.n) else None

    def compute() -> Stats:
        # Minutes for a large split on a CPU: said before, not only after (a run looked hung there).
        log.info(
            "computing the reference statistics of %s %s (%s; cached in %s for later runs)",
            key.dataset,
            key.split,
            "all images" if key.num_images is None else f"its first {key.num_images} images",
            path,
        )
        return compute_statistics(
            batches_fn(), extractor, keep_features=keep_features, max_images=key.num_images
        )

    return cached_npz(path, parse, compute, stats_arrays, CACHE_SETTING)
