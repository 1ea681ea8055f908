"""The number a hyperparameter sweeper minimises: cfg.optimized_metric looked up in a run's final metrics."""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig

from .errors import SweepConfigError


def optimized_metric(cfg: DictConfig, metrics: Mapping[str, float]) -> float | None:
    """The value of the metric named by cfg.optimized_metric (None when unset), e.g. val/loss or val/fd_effl0."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        logged = ", ".join(sorted(metrics)) or "none"
        raise SweepConfigError(
            f"optimized_metric={name} was not logged by this run; logged metrics: {logged}"
        )
    return float(metrics[name])
