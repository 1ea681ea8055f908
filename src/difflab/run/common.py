"""What the entry functions share: objects built from configs, the conditioning the data and the model agree on
written into the config, the run's resolved config; where results go is io/results.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from .errors import SweepConfigError


def instantiate_entries(cfg: DictConfig | None) -> list[Any]:
    """One object per entry of a dict-of-entries config (callbacks, loggers) that has a `_target_`; entries set
    to null are switched off (lightning-hydra-template style)."""
    if not cfg:
        return []
    return [
        instantiate(entry) for entry in cfg.values() if isinstance(entry, DictConfig) and "_target_" in entry
    ]


def fill_conditioning(cfg: DictConfig) -> dict[str, Any]:
    """Fill cfg.data and cfg.model in place so they agree on the conditioning before anything is built or compared
    (difflab.data.conditioning says how; the classes are counted, and a folder tree's class folders recorded, on
    the dataset cfg.data builds). Returns the model values it set (e.g. num_classes counted in the data)."""
    from ..data.conditioning import agreed_conditioning  # torch: only once a run is checked

    def find_classes() -> tuple[int, list[str] | None]:
        data = instantiate(cfg.data, condition="labels")
        return data.num_classes, data.class_folders

    set_data, set_model = agreed_conditioning(cfg.data, cfg.model, find_classes)
    with open_dict(cfg.data), open_dict(cfg.model):
        cfg.data.update(set_data)
        cfg.model.update(set_model)
    return set_model


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data, with the Hydra group choices (model=…, data=…) recorded beside it."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("module", None)  # it only points at model, schedule, optim, …: stored once, under their names
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        config["choices"] = {k: v for k, v in choices.items() if not k.startswith("hydra")}
    return config


def optimized_metric(cfg: DictConfig, metrics: Mapping[str, float]) -> float | None:
    """The value a hyperparameter sweeper minimises: cfg.optimized_metric (e.g. val/loss) among a run's final
    metrics; None when unset."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        logged = ", ".join(sorted(metrics)) or "none"
        raise SweepConfigError(
            f"optimized_metric={name} was not logged by this run; logged metrics: {logged}"
        )
    return float(metrics[name])
