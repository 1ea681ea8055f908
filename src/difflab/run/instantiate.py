"""Build lists of callbacks and loggers from the dict-of-entries configs (lightning-hydra-template style)."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig


def instantiate_entries(cfg: DictConfig | None) -> list[Any]:
    """One object per entry that has a `_target_`; entries set to null are switched off."""
    if not cfg:
        return []
    return [
        instantiate(entry) for entry in cfg.values() if isinstance(entry, DictConfig) and "_target_" in entry
    ]
