"""Evaluator: the metric settings of a run, turned into reference statistics and scores.

Shared by the FID callback (during training) and evaluate.py (from the command line), so both
compute the same numbers from the same settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from difflab.metrics.cache import ReferenceKey, default_cache_dir, reference_statistics
from difflab.metrics.cond_classifier import (
    ClassifierKey,
    LabelledBatches,
    LinearClassifier,
    conditioning_classifier,
)
from difflab.metrics.distances import evaluate_features, inception_score
from difflab.metrics.efficientnet_lite0 import FEATURE_DIM
from difflab.metrics.extractors import (
    INCEPTION_DIM,
    FeatureExtractor,
    canonical_name,
    get_extractor,
    metric_name,
)
from difflab.metrics.statistics import DEFAULT_KEEP_FEATURES, Stats, StatsAccumulator

REFERENCE_SPLITS = ("train", "val")


@dataclass
class Evaluator:
    """What to measure and against what; see conf/metrics/effl0.yaml for each field's meaning."""

    extractor: str = "efficientnet_lite0"
    inception_weights: str | None = None
    cache_dir: str | None = None
    reference_split: str = "val"
    num_reference: int | None = None
    keep_features: int = DEFAULT_KEEP_FEATURES
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    prc: bool = True
    inception_score: bool = False
    isc_splits: int = 10
    batch_size: int = 64
    cpu_threads: int | None = None
    classifier_train_images: int | None = 10_000
    _extractors: dict[str, FeatureExtractor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.reference_split not in REFERENCE_SPLITS:
            raise ValueError(
                f"metrics.reference_split={self.reference_split!r}; choose one of {', '.join(REFERENCE_SPLITS)}"
            )
        self.extractor = canonical_name(self.extractor)

    @property
    def fd_key(self) -> str:
        """'fid' for InceptionV3 features, 'fd_effl0' for EfficientNet-Lite0."""
        return metric_name(self.extractor)

    @property
    def is_key(self) -> str:
        """'isc' for InceptionV3 logits (torch-fidelity's name), 'is_effl0' for EfficientNet-Lite0's."""
        return "isc" if self.extractor == "inception" else "is_effl0"

    def embed(
        self, images: torch.Tensor, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features of uint8 images, and their logits when the Inception Score is on (else None)."""
        with self._threads_for(device):
            features, logits = self.feature_extractor(device).embed(images)
        return features, logits if self.inception_score else None

    def feature_extractor(self, device: torch.device | str = "cpu") -> FeatureExtractor:
        """The extractor network on `device`, built once (loading weights is the slow part)."""
        key = str(torch.device(device))
        if key not in self._extractors:
            self._extractors[key] = get_extractor(
                self.extractor,
                weights_path=self.inception_weights,
                device=device,
                batch_size=self.batch_size,
            )
        return self._extractors[key]

    def reference(
        self,
        dataset_id: str,
        resolution: int,
        batches_fn: Callable[[], Iterable[torch.Tensor]],
        device: torch.device | str = "cpu",
        split_size: int | None = None,
    ) -> tuple[Stats, bool]:
        """(stats, cache hit) of the reference split, computed from batches_fn() only on a cache miss.
        `split_size`: the images the split holds; a num_reference of them or more is the whole split, cached as
        such (before, num_reference=100000 on 90 images made a second entry of the same 90)."""
        limit = self.num_reference
        if limit is not None and split_size is not None and limit >= split_size:
            limit = None
        key = ReferenceKey(dataset_id, self.reference_split, resolution, self.extractor, limit)
        with self._threads_for(device):
            return reference_statistics(
                key, batches_fn, self.feature_extractor(device), self.cache_dir, self.keep_features
            )

    def classifier(
        self,
        dataset_id: str,
        resolution: int,
        train_fn: Callable[[int | None], LabelledBatches],
        heldout_fn: Callable[[], LabelledBatches],
        device: torch.device | str = "cpu",
    ) -> tuple[LinearClassifier, bool]:
        """(classifier, cache hit) of the conditioning accuracy, fitted on the features of train_fn(limit)'s
        labelled real images (limit = classifier_train_images) only on a cache miss."""
        limit = self.classifier_train_images
        key = ClassifierKey(dataset_id, resolution, self.extractor, limit)
        with self._threads_for(device):
            return conditioning_classifier(
                key, lambda: train_fn(limit), heldout_fn, self.feature_extractor(device), self.cache_dir
            )

    @contextmanager
    def _threads_for(self, device: torch.device | str) -> Iterator[None]:
        """torch's CPU thread count set to cpu_threads (0: every core) while the extractor runs on the CPU.

        A run may train on one thread (tiny convolutions spin on more); the extractor's 224-px convolutions do
        not, and would otherwise run at that one thread's speed."""
        if self.cpu_threads is None or torch.device(device).type != "cpu":
            yield
            return
        before = torch.get_num_threads()
        cores = len(os.sched_getaffinity(0))
        # At most the cores: more threads only wait their turn (and 10**6 crashed torch).
        torch.set_num_threads(min(self.cpu_threads or cores, cores))
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def accumulator(self) -> StatsAccumulator:
        """Running statistics to feed feature batches into (memory stays bounded for any count)."""
        return StatsAccumulator(self.feature_dim, self.extractor, self.keep_features)

    @property
    def feature_dim(self) -> int:
        """Length of the extractor's feature vectors."""
        return {"efficientnet_lite0": FEATURE_DIM, "inception": INCEPTION_DIM}[self.extractor]

    def statistics(self, features: torch.Tensor) -> Stats:
        """Stats of already extracted features (N, D), keeping a sample for KID and precision/recall."""
        acc = self.accumulator()
        acc.update(features)
        return acc.result()

    def scores(
        self, generated: Stats, reference: Stats, logits: torch.Tensor | None = None
    ) -> dict[str, float]:
        """{fid|fd_effl0, kid, kid_std, precision, recall} of generated vs reference statistics, plus
        {isc|is_effl0, …_std} from the generated images' logits when given."""
        raw = evaluate_features(
            generated,
            reference,
            kid_subsets=self.kid_subsets,
            kid_subset_size=self.kid_subset_size,
            prc=self.prc,
        )
        renamed = {"kid_mean": "kid", "kid_std": "kid_std"}
        out = {renamed.get(k, k): v for k, v in raw.items()}
        if logits is not None:
            out[self.is_key], out[f"{self.is_key}_std"] = inception_score(logits, self.isc_splits)
        return out

    def settings(self) -> dict[str, Any]:
        """The fields that determine the numbers, for a report next to them."""
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_") and k != "cpu_threads"}
        out["cache_dir"] = str(Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir())
        return out
