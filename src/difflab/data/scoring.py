"""A datamodule's real images as the metrics take them: the reference statistics of its reference split and the
conditioning-accuracy classifier of its labelled splits, each read from the metrics cache or computed into it.
evaluate.py and the FID callback score against the same."""

from __future__ import annotations

import torch

from difflab.data.batches import labelled_uint8_batches, uint8_batches
from difflab.data.datamodule import ImageDataModule
from difflab.data.identity import dataset_id
from difflab.metrics.cond_classifier import LinearClassifier
from difflab.metrics.evaluator import Evaluator
from difflab.metrics.statistics import Stats


def reference_statistics(
    evaluator: Evaluator, data: ImageDataModule, device: torch.device | str
) -> tuple[Stats, bool]:
    """(stats, cache hit) of the evaluator's reference split of `data` (its first num_reference images)."""
    split = data.dataset_for(evaluator.reference_split)
    return evaluator.reference(
        dataset_id(data), data.image_size, lambda: uint8_batches(split, limit=evaluator.num_reference), device
    )


def conditioning_classifier_for(
    evaluator: Evaluator, data: ImageDataModule, device: torch.device | str
) -> tuple[LinearClassifier, bool]:
    """(classifier, cache hit): the classifier of the conditioning accuracy for this labelled data, fitted
    on its training split and scored on its held-out split (read from the cache when there)."""
    return evaluator.classifier(
        dataset_id(data),
        data.image_size,
        lambda limit: labelled_uint8_batches(data.class_dataset_for("train"), limit=limit),
        lambda: labelled_uint8_batches(data.class_dataset_for("val")),
        device,
    )
