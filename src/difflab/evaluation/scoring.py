"""Score a set of images against its reference: a warning when the sets are too small for stable numbers, the
metrics (with the conditioning accuracy) of every batch embedded once, and the report that holds them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import torch

from ..data import ImageDataModule
from ..data.scoring import reference_statistics
from ..generation import Conditions
from ..metrics import Evaluator
from ..metrics.cond_classifier import LinearClassifier
from ..metrics.distances import PRC_NEIGHBORHOOD
from ..metrics.sample_size import STABLE_PR, small_sample_warning
from ..metrics.statistics import Stats
from ..progress import Progress
from .conditioning import conditioning_classifier, conditioning_report
from .report import reference_entry
from .samples import SetToScore
from .unfinished import ScoredSoFar

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
    so_far: ScoredSoFar,
) -> tuple[dict[str, float], dict[str, Any] | None]:
    """The metrics of the n images in `batches` against `reference`, and with a classifier the conditioning
    accuracy of the requested labels (its report, else None). `so_far`: the images already scored (batches holds
    the others), added to as each batch is."""
    with Progress(what, n, "images", start=so_far.done) as progress:
        for batch in batches:
            features, logits = evaluator.embed(batch, device)
            predicted = None if classifier is None else torch.as_tensor(classifier.predict(features))
            so_far.add(features, logits, predicted)
            progress.advance(len(batch))
    logits = torch.cat(so_far.logits) if so_far.logits else None
    scores = evaluator.scores(so_far.statistics.result(), reference, logits)
    if classifier is None:
        return scores, None
    conditioning = conditioning_report(classifier, so_far.predicted, conditions.labels)
    scores["cond_accuracy"] = conditioning["cond_accuracy"]
    scores["classifier_accuracy"] = classifier.heldout_accuracy
    return scores, conditioning


def warn_if_too_few(evaluator: Evaluator, n: int, reference: int) -> None:
    """One warning when n samples or the reference set are too few for the metrics asked (sizes that give stable
    numbers included), before the work starts."""
    # Precision/recall of a few images are left out (metrics.distances), so they are not warned of either.
    prc = evaluator.keep_features > 0 and evaluator.prc and min(n, reference) > PRC_NEIGHBORHOOD
    warning = small_sample_warning(n, reference, evaluator.fd_key, evaluator.feature_dim, prc)
    if warning and evaluator.reference_split == "val":
        warning += " (metrics.reference_split=train scores against the training split, usually larger)"
    if warning:
        log.warning(warning)
    if 0 < evaluator.keep_features < min(n, reference, STABLE_PR) and (
        evaluator.prc or evaluator.kid_subsets
    ):
        # Before, keep_features=5 gave precision 1.0 and recall 1.0 of 5 features each, without a word.
        log.warning(
            "metrics.keep_features=%d: KID and precision/recall are computed from %d images of each set alone "
            "(precision/recall are inflated below %s); raise it to score what was generated",
            evaluator.keep_features,
            evaluator.keep_features,
            f"{STABLE_PR:,}",
        )


def score_report(
    evaluator: Evaluator,
    images: SetToScore,
    data: ImageDataModule,
    conditions: Conditions,
    device: torch.device,
) -> dict[str, Any]:
    """evaluate.py's report: the metrics of `images` against `data`'s reference statistics (cached), with the
    conditioning accuracy where `conditions` asks for labels."""
    source = images.source
    start = time.perf_counter()
    reference, hit = reference_statistics(evaluator, data, device)
    log.info("reference statistics: %d images (%s)", reference.n, "cached" if hit else "computed and cached")
    n = int(source["n"])
    warn_if_too_few(evaluator, n, reference.n)
    classifier = conditioning_classifier(evaluator, data, conditions, device)
    what = "embedding" if source["source"] == "images" else "generating and embedding"
    scores, conditioning = scored(
        evaluator, images.batches, n, reference, classifier, conditions, device, what, images.so_far
    )
    return {
        "metrics": scores,
        "generated": source,
        "reference": reference_entry(data, evaluator.reference_split, reference.n, hit),
        **({"conditioning": conditioning} if conditioning is not None else {}),
        "metric_settings": evaluator.settings(),
        "seconds": round(time.perf_counter() - start, 1),
    }
