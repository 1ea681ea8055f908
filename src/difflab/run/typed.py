"""What the user typed: the overrides Hydra recorded for this run, so a value given on the command line can be
told from the same value left at its default (a group's default option, a key of the primary config)."""

from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ..runs.inherit import override_key


def typed_overrides(cfg: DictConfig) -> list[str]:
    """The run's overrides as Hydra records them: in cfg.hydra before the task runs (Hydra's callbacks see it
    there), from HydraConfig inside the task; none outside Hydra (a config composed in a test or a notebook)."""
    hydra = cfg.get("hydra") if isinstance(cfg, DictConfig) else None
    if hydra is not None and hydra.get("overrides") is not None:
        return _as_typed(hydra.overrides, "task")
    if HydraConfig.initialized():
        return _as_typed(HydraConfig.get().overrides, "task")
    return []


def typed_hydra_overrides(cfg: DictConfig) -> list[str]:
    """The hydra.* overrides typed for this run (hydra.sweep.dir=…), as typed."""
    return _as_typed(cfg.hydra.overrides, "hydra")


def _as_typed(overrides: DictConfig, which: str) -> list[str]:
    """One list of Hydra's recorded overrides as typed: unresolved, since `hydra.sweep.subdir=${hydra.job.num}`
    cannot be resolved before a job has its number."""
    return [str(o) for o in OmegaConf.to_container(overrides, resolve=False).get(which) or []]


def typed_under(cfg: DictConfig, key: str) -> list[str]:
    """The overrides typed for `key` or a key below it (`schedule=cosine`, `schedule.timesteps=500`)."""
    return [
        o for o in typed_overrides(cfg) if override_key(o) == key or override_key(o).startswith(f"{key}.")
    ]


def typed_keys_under(cfg: DictConfig, key: str) -> set[str]:
    """The keys typed at or below `key` (`inpaint.steps=100` gives inpaint.steps)."""
    return {override_key(o) for o in typed_under(cfg, key)}


def group_choices(cfg: DictConfig) -> dict[str, Any]:
    """The group options of this config (model=…, data=…): in cfg.hydra before the task runs, from HydraConfig in
    it; none outside Hydra."""
    node = OmegaConf.select(cfg, "hydra.runtime.choices")
    if node is None and HydraConfig.initialized():
        node = HydraConfig.get().runtime.choices
    return {} if node is None else dict(node)
