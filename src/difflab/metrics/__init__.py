"""FID-style evaluation: feature extractors, streaming statistics, distances, reference-statistics cache."""

from difflab.metrics.cache import (
    ReferenceKey,
    default_cache_dir,
    load_stats,
    reference_statistics,
    save_stats,
)
from difflab.metrics.distances import (
    evaluate_features,
    frechet_distance,
    inception_score,
    kernel_distance,
    precision_recall,
)
from difflab.metrics.efficientnet_lite0 import EfficientNetLite0, efficientnet_lite0
from difflab.metrics.evaluator import Evaluator
from difflab.metrics.extractors import (
    EfficientNetLite0Extractor,
    FeatureExtractor,
    InceptionExtractor,
    get_extractor,
    metric_name,
)
from difflab.metrics.statistics import DEFAULT_KEEP_FEATURES, Stats, StatsAccumulator, compute_statistics

__all__ = [
    "DEFAULT_KEEP_FEATURES",
    "EfficientNetLite0",
    "EfficientNetLite0Extractor",
    "Evaluator",
    "FeatureExtractor",
    "InceptionExtractor",
    "ReferenceKey",
    "Stats",
    "StatsAccumulator",
    "compute_statistics",
    "default_cache_dir",
    "efficientnet_lite0",
    "evaluate_features",
    "frechet_distance",
    "get_extractor",
    "inception_score",
    "kernel_distance",
    "load_stats",
    "metric_name",
    "precision_recall",
    "reference_statistics",
    "save_stats",
]
