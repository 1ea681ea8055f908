"""Conditioning accuracy: does a class-conditional model draw the class it is asked for?

A logistic regression on the evaluator's image features (EfficientNet-Lite0 by default) is fitted to the
real labelled training images and names the class of each generated sample; the share named as requested
is the conditioning accuracy. Its accuracy on the real held-out split is reported beside it: the ceiling
that samples are measured against. The fitted classifier is cached on disk next to the reference
statistics, so it is fitted once per dataset, resolution and extractor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from difflab.io.npz_cache import Arrays, cached_npz
from difflab.metrics.cache import CACHE_SETTING, default_cache_dir
from difflab.metrics.extractors import FeatureExtractor

FORMAT_VERSION = 1
# Batches of real images with their classes: uint8 (N, C, H, W) and int64 (N,).
LabelledBatches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ClassifierKey:
    """What identifies a fitted classifier; num_train=None means the whole training split."""

    dataset: str
    resolution: int
    extractor: str
    num_train: int | None = None

    def filename(self) -> str:
        """e.g. 'digits-1ch-8e6a2c3c-classifier-8px-efficientnet_lite0-all.npz' (unsafe chars become '_')."""
        parts = [
            self.dataset,
            "classifier",
            f"{self.resolution}px",
            self.extractor,
            str(self.num_train or "all"),
        ]
        return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts) + ".npz"


@dataclass
class LinearClassifier:
    """class = classes[argmax(((x - mean) / scale) · weightᵀ + bias)], from features x (N, D)."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    weight: np.ndarray  # (K, D)
    bias: np.ndarray  # (K,)
    classes: np.ndarray  # (K,) the label of each row
    heldout_accuracy: float  # on the real held-out split
    num_train: int
    num_heldout: int

    def predict(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        x = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return self.classes[np.argmax(x @ self.weight.T + self.bias, axis=1)]

    def accuracy(self, features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
        """Share of rows whose predicted class is their label."""
        return float(np.mean(self.predict(features) == np.asarray(labels)))


def per_class_accuracy(predicted: np.ndarray, wanted: Sequence[int]) -> dict[int, float]:
    """{class: share of the samples requested as that class that were classified as it}."""
    wanted = np.asarray(wanted)
    return {int(c): float(np.mean(predicted[wanted == c] == c)) for c in np.unique(wanted)}


def fit_classifier(
    train: tuple[np.ndarray, np.ndarray], heldout: tuple[np.ndarray, np.ndarray]
) -> LinearClassifier:
    """Logistic regression on standardised features of (features, labels); scored on the held-out pair."""
    from sklearn.linear_model import LogisticRegression  # slow to import; only needed on a cache miss

    x, y = train
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"the conditioning classifier needs images of at least 2 classes (got {np.unique(y)})"
        )
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-8] = 1.0  # constant features carry nothing; avoid dividing by zero
    fit = LogisticRegression(max_iter=2000).fit((x - mean) / scale, y)
    weight, bias = fit.coef_, fit.intercept_
    if weight.shape[0] == 1:  # sklearn's binary form: one row for classes_[1] against a zero row
        weight, bias = np.concatenate([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
    classifier = LinearClassifier(
        mean, scale, weight, bias, fit.classes_, float("nan"), len(y), len(heldout[1])
    )
    if len(heldout[1]):
        classifier.heldout_accuracy = classifier.accuracy(*heldout)
    return classifier


_FIELDS = ("mean", "scale", "weight", "bias", "classes", "heldout_accuracy", "num_train", "num_heldout")


def classifier_arrays(classifier: LinearClassifier) -> dict[str, np.ndarray]:
    """The arrays of a classifier file."""
    arrays = {name: np.asarray(getattr(classifier, name)) for name in _FIELDS}
    return {**arrays, "version": np.int64(FORMAT_VERSION)}


def classifier_from_arrays(z: Arrays, path: Path) -> LinearClassifier:
    """The classifier of a file's arrays; ValueError for another format."""
    if int(z["version"]) != FORMAT_VERSION:
        raise ValueError(f"{path}: classifier format {int(z['version'])}, expected {FORMAT_VERSION}")
    return LinearClassifier(
        mean=z["mean"],
        scale=z["scale"],
        weight=z["weight"],
        bias=z["bias"],
        classes=z["classes"],
        heldout_accuracy=float(z["heldout_accuracy"]),
        num_train=int(z["num_train"]),
        num_heldout=int(z["num_heldout"]),
    )


def features_and_labels(
    batches: LabelledBatches, extractor: FeatureExtractor
) -> tuple[np.ndarray, np.ndarray]:
    """The extractor's features (N, D) and the labels (N,) of labelled uint8 batches."""
    features, labels = [], []
    for images, batch_labels in batches:
        features.append(extractor(images).numpy())
        labels.append(batch_labels.numpy())
    if not features:
        return np.zeros((0, extractor.dim)), np.zeros(0, dtype=np.int64)
    return np.concatenate(features), np.concatenate(labels)


def conditioning_classifier(
    key: ClassifierKey,
    train_fn: Callable[[], LabelledBatches],
    heldout_fn: Callable[[], LabelledBatches],
    extractor: FeatureExtractor,
    cache_dir: str | Path | None = None,
) -> tuple[LinearClassifier, bool]:
    """(classifier, hit): read the cached file, or fit on train_fn()'s images (scored on heldout_fn()'s) and
    write it once. An unreadable or outdated file counts as a miss and is overwritten."""
    if key.extractor != extractor.name:
        raise ValueError(f"key is for extractor {key.extractor!r} but got {extractor.name!r}")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = folder / key.filename()

    def fit() -> LinearClassifier:
        return fit_classifier(
            features_and_labels(train_fn(), extractor), features_and_labels(heldout_fn(), extractor)
        )

    return cached_npz(path, lambda z: classifier_from_arrays(z, path), fit, classifier_arrays, CACHE_SETTING)
