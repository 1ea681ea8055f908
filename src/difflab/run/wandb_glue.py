"""The W&B logger's config, filled for this Hydra job: the run folder's run id (so resumes and requeues log into
one W&B run) and the run's name, tags and group (difflab.tracking holds the rest of the W&B glue)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from ..tracking.run_ids import ID_FILE, choose_run_id
from ..tracking.run_names import job_run_name, sweep_group

log = logging.getLogger("difflab")


def attach_run_id(
    cfg: DictConfig, run_dir: Path, stored_config: dict[str, Any] | None, record: bool
) -> str | None:
    """Set cfg.logger.wandb.id (WandbLogger already resumes with resume="allow"); with `record` (rank 0) write
    it to the run folder. None when W&B is not among the loggers."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if not isinstance(wandb_cfg, DictConfig):
        return None
    run_id = choose_run_id(wandb_cfg.get("id"), run_dir, stored_config)
    with open_dict(wandb_cfg):
        wandb_cfg.id = run_id
    if record:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ID_FILE).write_text(run_id + "\n")
    return run_id


def name_wandb_run(cfg: DictConfig) -> None:
    """Fill cfg.logger.wandb for this Hydra job so runs read well in the W&B table: tagged with the
    experiment, job_type = the task (train), named from the experiment and the overrides that change what is
    trained ("digits_cpu: optim.lr=1e-4,seed=3"), grouped by experiment, or by sweep (sweep_group) in a
    multirun. Values the user set (name, group, job_type) are kept."""
    wandb_cfg = cfg.get("logger", {}).get("wandb") if cfg.get("logger") else None
    if not isinstance(wandb_cfg, DictConfig) or not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    experiment = hydra_cfg.runtime.choices.get("experiment")
    exclude = [*hydra_cfg.job.config.override_dirname.exclude_keys, "experiment"]
    overrides = job_run_name(hydra_cfg.overrides.task, exclude)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    with open_dict(wandb_cfg):
        tags = list(wandb_cfg.get("tags") or [])
        if experiment and experiment not in tags:
            wandb_cfg.tags = [*tags, experiment]
        if wandb_cfg.get("job_type") is None:
            wandb_cfg.job_type = str(cfg.task_name)
        if wandb_cfg.get("name") is None:
            parts = [p for p in (experiment, overrides) if p]
            fallback = f"job{hydra_cfg.job.num}" if multirun else None
            wandb_cfg.name = ": ".join(parts) or fallback
        if wandb_cfg.get("group") is None:
            root = (cfg.get("paths") or {}).get("root_dir")
            wandb_cfg.group = sweep_group(str(hydra_cfg.sweep.dir), root) if multirun else experiment
