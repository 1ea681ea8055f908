"""One call from generated and reference statistics to the metric dict that loggers receive."""

from __future__ import annotations

from difflab.metrics.distances import frechet_distance, kernel_distance, precision_recall
from difflab.metrics.extractors import metric_name
from difflab.metrics.statistics import Stats


def evaluate_features(
    gen_stats: Stats,
    ref_stats: Stats,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    prc: bool = True,
    prc_neighborhood: int = 3,
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
        if prc:
            out["precision"], out["recall"] = precision_recall(gen_stats, ref_stats, prc_neighborhood)
    return out
