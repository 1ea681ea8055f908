"""OmegaConf resolvers the configs use; registered when difflab.run is imported (before Hydra composes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf


def metric_key(extractor: str) -> str:
    """${metric_key:efficientnet_lite0} -> 'fd_effl0', ${metric_key:inception} -> 'fid'."""
    from ..metrics.extractors import canonical_name, metric_name  # torch: only when a config asks

    return metric_name(canonical_name(extractor))


def project_root(_root_: Any = None) -> str:
    """The project folder, where outputs/, multirun/ and data/ go whatever the current folder: $DIFFLAB_ROOT,
    else the parent of the config folder the entry point was started with, else the current folder. Before the
    job starts (Hydra's callbacks: preflight claims the run folder then) that folder is read from the config
    being resolved (`_root_`, which OmegaConf passes), as HydraConfig is not set yet."""
    if os.environ.get("DIFFLAB_ROOT"):
        return os.environ["DIFFLAB_ROOT"]
    sources = HydraConfig.get().runtime.config_sources if HydraConfig.initialized() else None
    if sources is None and _root_ is not None:
        sources = OmegaConf.select(_root_, "hydra.runtime.config_sources", default=None)
    for source in sources or []:
        if source.provider == "main" and source.schema == "file":
            return str(Path(source.path).resolve().parent)
    return str(Path.cwd())


def register_resolvers() -> None:
    """Idempotent: re-importing (tests, notebooks) does not fail on an already registered name."""
    if not OmegaConf.has_resolver("metric_key"):
        OmegaConf.register_new_resolver("metric_key", metric_key)
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", project_root)
