"""Distances between feature statistics (Fréchet distance, KID and precision/recall via torch-fidelity), and the
metric dict that loggers receive."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from difflab.metrics.extractors import metric_name
from difflab.metrics.statistics import Stats

log = logging.getLogger("difflab")

# Precision/recall's k: the radius of each image is its distance to its k-th nearest neighbour (torch-fidelity's).
PRC_NEIGHBORHOOD = 3


def _check_compatible(a: Stats, b: Stats) -> None:
    """Refuse to compare statistics from different extractors."""
    if a.extractor != b.extractor or a.mu.shape != b.mu.shape:
        raise ValueError(
            f"statistics come from different extractors: {a.extractor} {a.mu.shape} vs {b.extractor} {b.mu.shape}"
        )


def _features(stats: Stats) -> torch.Tensor:
    """The kept feature sample as a tensor, or a clear error when none was kept."""
    if stats.features is None:
        raise ValueError(
            "KID and precision/recall need a feature sample: compute statistics with keep_features>0"
        )
    return torch.from_numpy(np.asarray(stats.features, dtype=np.float64))


def frechet_distance(a: Stats, b: Stats) -> float:
    """Fréchet distance between two Gaussians fitted to features (torch-fidelity's formula)."""
    _check_compatible(a, b)
    mu_sigma = [{"mu": s.mu.astype(np.float64), "sigma": s.sigma.astype(np.float64)} for s in (a, b)]
    return fid_statistics_to_metric(*mu_sigma, verbose=False)[KEY_METRIC_FID]


def kernel_distance(
    a: Stats, b: Stats, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID (mean, std over random subsets; cubic polynomial kernel); subset_size shrinks to fit the samples."""
    _check_compatible(a, b)
    fa, fb = _features(a), _features(b)
    size = min(subset_size, len(fa), len(fb))
    out = kid_features_to_metric(
        fa, fb, kid_subsets=subsets, kid_subset_size=size, rng_seed=seed, verbose=False
    )
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


def precision_recall(
    generated: Stats, reference: Stats, neighborhood: int = 3, batch_size: int = 1000
) -> tuple[float, float]:
    """Improved precision/recall (Kynkäänniemi et al. 2019) of generated vs reference feature samples."""
    _check_compatible(generated, reference)
    out = prc_features_to_metric(
        _features(generated),
        _features(reference),
        prc_neighborhood=neighborhood,
        prc_batch_size=batch_size,
        save_cpu_ram=True,  # batched distance rows instead of full N x N matrices
        verbose=False,
    )
    return out[KEY_METRIC_PRECISION], out[KEY_METRIC_RECALL]


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """Inception Score (mean, std over splits) from classifier logits (N, classes), via torch-fidelity.

    Meaningful only for class-like data (CIFAR-10, ImageNet-like), where confident and varied ImageNet
    predictions track quality and diversity; for digits or faces it says little.
    """
    if len(logits) < splits:
        raise ValueError(
            f"the Inception Score needs at least {splits} samples (one per split), got {len(logits)}"
        )
    out = isc_features_to_metric(logits.to(torch.float64), splits=splits, shuffle=True, rng_seed=seed)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


def evaluate_features(
    gen_stats: Stats,
    ref_stats: Stats,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    prc: bool = True,
    prc_neighborhood: int = PRC_NEIGHBORHOOD,
    seed: int = 0,
) -> dict[str, float]:
    """{fid|fd_<extractor>, kid_mean, kid_std, precision, recall}; KID/PRC only when both kept features.

    The Fréchet key is 'fid' only for InceptionV3 features, e.g. 'fd_effl0' for EfficientNet-Lite0,
    so numbers from a different network are never mistaken for comparable FIDs.
    """
    out = {metric_name(gen_stats.extractor): frechet_distance(gen_stats, ref_stats)}
    if gen_stats.features is not None and ref_stats.features is not None:
        out["kid_mean"], out["kid_std"] = kernel_distance(
            gen_stats, ref_stats, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
        )
        sizes = len(gen_stats.features), len(ref_stats.features)
        if prc and min(sizes) > prc_neighborhood:
            out["precision"], out["recall"] = precision_recall(gen_stats, ref_stats, prc_neighborhood)
        elif prc:  # torch-fidelity's k-th neighbour would be out of range (a kthvalue traceback)
            # Before, a sample capped by keep_features was given as the count generated (3 of 12).
            capped = sizes != (gen_stats.n, ref_stats.n)
            kept = (
                f" features kept of {gen_stats.n} and {ref_stats.n}: raise metrics.keep_features"
                if capped
                else ""
            )
            log.warning(
                "precision/recall left out: the radius of each image's %d nearest neighbours needs more than %d "
                "images on each side (got %d generated, %d reference%s)",
                prc_neighborhood,
                prc_neighborhood,
                *sizes,
                kept,
            )
    return out
