"""The conditioning accuracy of class-conditional samples: a linear classifier on the reference data's features,
and the report of how often the samples show the class they were asked for."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from ..data import ImageDataModule
from ..data.scoring import conditioning_classifier_for
from ..generation import Conditions
from ..metrics import Evaluator
from ..metrics.cond_classifier import LinearClassifier, per_class_accuracy

log = logging.getLogger("difflab")


def conditioning_classifier(
    evaluator: Evaluator, data: ImageDataModule, conditions: Conditions, device: torch.device
) -> LinearClassifier | None:
    """The classifier of the conditioning accuracy when samples have requested classes and the reference data
    has those labels (else None, with a warning)."""
    if conditions.labels is None:
        if conditions.prompts is not None and data is not None and not data.num_classes:
            # Before, "typed prompt= are not matched" also where none was typed: the data's own captions, of a
            # folder without class subfolders.
            log.info(
                "no conditioning accuracy: data=%s has no classes (no class subfolders) to match prompts to",
                data.dataset,
            )
        elif conditions.prompts is not None:
            # Typed prompts are never matched to classes, even a training caption's; the data's own are where
            # its captions name them.
            log.info(
                "no conditioning accuracy: these prompts are not known to name classes (only the data's own are, "
                "where its captions come from templates or class subfolders; typed prompt= are not matched to classes)"
            )
        return None
    highest = max(conditions.labels.classes)  # not max() over every sample's label: n may be huge
    if not data.num_classes or highest >= data.num_classes:
        log.warning(
            "no conditioning accuracy: data=%s has no labels for classes 0..%d", data.dataset, highest
        )
        return None
    if data.num_classes < 2:  # every sample is of the one class: there is no other to tell it from
        log.warning("no conditioning accuracy: data=%s has a single class", data.dataset)
        return None
    classifier, hit = conditioning_classifier_for(evaluator, data, device)
    log.info(
        "conditioning classifier: %d training images, %.3f accuracy on %d held-out (%s)",
        classifier.num_train,
        classifier.heldout_accuracy,
        classifier.num_heldout,
        "cached" if hit else "fitted and cached",
    )
    return classifier


def conditioning_report(
    classifier: LinearClassifier, predicted: list[torch.Tensor], wanted: Sequence[int]
) -> dict[str, Any]:
    """Conditioning accuracy overall and per requested class, beside the classifier's own accuracy."""
    found = torch.cat(predicted).numpy()
    wanted = list(wanted)  # every sample's class, now that all of them are made
    return {
        "cond_accuracy": float((found == torch.as_tensor(wanted).numpy()).mean()),
        "per_class_accuracy": per_class_accuracy(found, wanted),
        "classifier": {
            "heldout_accuracy": classifier.heldout_accuracy,
            "train_images": classifier.num_train,
            "heldout_images": classifier.num_heldout,
        },
    }
