"""train(cfg): build data, model, trainer from the composed config and fit."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..callbacks import StoreRunConfig
from ..training import DiffusionModule
from .instantiate import instantiate_entries
from .wandb_mode import default_wandb_offline

log = logging.getLogger("difflab")


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data, with the Hydra group choices (model=…, data=…) recorded beside it."""
    config = OmegaConf.to_container(cfg, resolve=True)
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        config["choices"] = {k: v for k, v in choices.items() if not k.startswith("hydra")}
    return config


def build_module(cfg: DictConfig) -> DiffusionModule:
    """The LightningModule from the model, schedule, optim and lr_scheduler groups."""
    return DiffusionModule(
        net=instantiate(cfg.model),
        schedule=instantiate(cfg.schedule),
        optimizer=instantiate(cfg.optim),
        lr_scheduler=instantiate(cfg.lr_scheduler) if cfg.get("lr_scheduler") else None,
        prediction_type=cfg.prediction_type,
    )


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit a diffusion model; returns the last logged metrics. Run files go to cfg.paths.output_dir."""
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("logger") and "wandb" in cfg.logger:
        default_wandb_offline()
    if cfg.get("cpu_threads"):
        torch.set_num_threads(int(cfg.cpu_threads))
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")  # TF32 on Ampere+ GPUs; no effect on the CPU

    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    config = resolved_config(cfg)
    callbacks = [*instantiate_entries(cfg.get("callbacks")), StoreRunConfig(config)]
    loggers = instantiate_entries(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(config)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    if trainer.is_global_zero:
        log.info("run folder: %s", output_dir)
        log.info("checkpoints: %s", output_dir / "checkpoints")
        log.info("sample grids: %s (final.png is the last)", output_dir / "samples")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return {k: float(v) for k, v in trainer.callback_metrics.items()}
