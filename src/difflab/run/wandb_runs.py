"""One W&B run per job: sweep jobs are named from their overrides and grouped by sweep; runs are closed at job end."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

# Overrides that say where or how a job runs, not what it trains: left out of run names.
NOT_IN_NAMES = {
    "ckpt_path",
    "cpu_threads",
    "tags",
    "optimized_metric",
    "hparams_search",
    "data.root",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
}
NOT_IN_NAMES_PREFIXES = ("paths", "logger", "callbacks", "hydra")


def job_run_name(overrides: Sequence[str], exclude: Sequence[str] = ()) -> str | None:
    """`key=value,…` of a job's overrides as typed, sorted like Hydra's override_dirname, noise keys left out."""
    kept = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key in NOT_IN_NAMES or key in exclude or key.split(".")[0].split("/")[0] in NOT_IN_NAMES_PREFIXES:
            continue
        kept.append(override.input_line)
    return ",".join(sorted(kept)) or None


def name_wandb_run(cfg: DictConfig) -> None:
    """Fill cfg.logger.wandb for this Hydra job: tag the experiment; in a multirun, name the run from the
    job's overrides and group it by the sweep folder. Values the user set (name, group) are kept."""
    wandb_cfg = cfg.get("logger", {}).get("wandb") if cfg.get("logger") else None
    if not isinstance(wandb_cfg, DictConfig) or not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    with open_dict(wandb_cfg):
        experiment = hydra_cfg.runtime.choices.get("experiment")
        tags = list(wandb_cfg.get("tags") or [])
        if experiment and experiment not in tags:
            wandb_cfg.tags = [*tags, experiment]
        if hydra_cfg.mode != RunMode.MULTIRUN:
            return  # single runs keep name/group as configured (null: W&B picks a name)
        if wandb_cfg.get("name") is None:
            exclude = hydra_cfg.job.config.override_dirname.exclude_keys
            wandb_cfg.name = job_run_name(hydra_cfg.overrides.task, exclude) or f"job{hydra_cfg.job.num}"
        if wandb_cfg.get("group") is None:
            wandb_cfg.group = str(hydra_cfg.sweep.dir)


def finish_wandb_run(failed: bool = False) -> None:
    """Close the W&B run this process opened, if any: otherwise the next job of an in-process sweep would
    log into it (Lightning's WandbLogger reuses a run in progress). wandb is touched only if already loaded."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)
