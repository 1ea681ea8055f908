"""OmegaConf resolvers the configs use; registered when difflab.run is imported (before Hydra composes)."""

from __future__ import annotations

from omegaconf import OmegaConf

from ..metrics.extractors import canonical_name, metric_name


def metric_key(extractor: str) -> str:
    """${metric_key:efficientnet_lite0} -> 'fd_effl0', ${metric_key:inception} -> 'fid'."""
    return metric_name(canonical_name(extractor))


def register_resolvers() -> None:
    """Idempotent: re-importing (tests, notebooks) does not fail on an already registered name."""
    if not OmegaConf.has_resolver("metric_key"):
        OmegaConf.register_new_resolver("metric_key", metric_key)
