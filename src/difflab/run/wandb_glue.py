"""The W&B logger's config, filled for this Hydra job: the run folder's run id (so resumes and requeues log into
one W&B run) and the run's name, tags and group (difflab.tracking holds the rest of the W&B glue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from ..tracking.run_ids import ID_FILE, choose_run_id
from ..tracking.run_names import job_run_name, sweep_group, wandb_run_fields


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
    """Fill cfg.logger.wandb's name, tags, job type and group for this Hydra job (tracking.run_names says how),
    from the experiment, the job's overrides and, in a multirun, its sweep; values the user set are kept."""
    wandb_cfg = cfg.get("logger", {}).get("wandb") if cfg.get("logger") else None
    if not isinstance(wandb_cfg, DictConfig) or not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    experiment = hydra_cfg.runtime.choices.get("experiment")
    exclude = [*hydra_cfg.job.config.override_dirname.exclude_keys, "experiment"]
    root_dir = (cfg.get("paths") or {}).get("root_dir")
    overrides = job_run_name(hydra_cfg.overrides.task, exclude, root_dir)
    sweep_job = sweep = None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sweep_job = hydra_cfg.job.num
        sweep = sweep_group(str(hydra_cfg.sweep.dir), root_dir)
    fields = wandb_run_fields(wandb_cfg, str(cfg.task_name), experiment, overrides, sweep_job, sweep)
    with open_dict(wandb_cfg):
        wandb_cfg.update(fields)
