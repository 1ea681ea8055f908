"""Score a set of images against its reference: a warning when the sets are too small for stable numbers, and
the metrics (with the conditioning accuracy) of every batch embedded once."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch

from ..generation import Conditions
from ..metrics import Evaluator
from ..metrics.cond_classifier import LinearClassifier
from ..metrics.sample_size import small_sample_warning
from ..metrics.statistics import Stats
from ..progress import Progress
from .conditioning import conditioning_report

log = logging.getLogger("difflab")


def scored(
    evaluator: Evaluator,
    batches: Iterable[torch.Tensor],
    n: int,
    reference: Stats,
    classifier: LinearClassifier | None,
    conditions: Conditions,
    device: torch.device,
    what: str,
) -> tuple[dict[str, float], dict[str, Any] | None]:
    """The metrics of the n images in `batches` against `reference`, and with a classifier the conditioning
    accuracy of the requested labels (its report, else None)."""
    acc, logits, predicted = evaluator.accumulator(), [], []
    with Progress(what, n, "images") as progress:
        for batch in batches:
            features, batch_logits = evaluator.embed(batch, device)
            acc.update(features)
            if batch_logits is not None:
                logits.append(batch_logits)
            if classifier is not None:
                predicted.append(torch.as_tensor(classifier.predict(features)))
            progress.advance(len(batch))
    scores = evaluator.scores(acc.result(), reference, torch.cat(logits) if logits else None)
    if classifier is None:
        return scores, None
    conditioning = conditioning_report(classifier, predicted, conditions.labels)
    scores["cond_accuracy"] = conditioning["cond_accuracy"]
    scores["classifier_accuracy"] = classifier.heldout_accuracy
    return scores, conditioning


def warn_if_too_few(evaluator: Evaluator, n: int, reference: int) -> None:
    """One warning when n samples or the reference set are too few for the metrics asked (sizes that give stable
    numbers included), before the work starts."""
    prc = evaluator.keep_features > 0 and evaluator.prc
    warning = small_sample_warning(n, reference, evaluator.fd_key, evaluator.feature_dim, prc)
    if warning and evaluator.reference_split == "val":
        warning += " (metrics.reference_split=train scores against the training split, usually larger)"
    if warning:
        log.warning(warning)
