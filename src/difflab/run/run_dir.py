"""Never overwrite a run folder: a Hydra callback refuses one that already holds a run."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def existing_run_files(run_dir: Path) -> list[str]:
    """What in `run_dir` shows a previous run (checkpoints, samples, logs), if anything."""
    if not run_dir.is_dir():
        return []
    return sorted(
        p.name for p in run_dir.iterdir() if p.name in {"checkpoints", "samples", ".hydra", "wandb"}
    )


def is_secondary_rank() -> bool:
    """True in a DDP process other than global rank 0: Lightning's children (LOCAL_RANK), other nodes
    (NODE_RANK) and SLURM tasks (SLURM_PROCID) all join the run folder rank 0 has just created."""
    return any(os.environ.get(var, "0") != "0" for var in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "RANK"))


class RefuseExistingRunDir(Callback):
    """Before Hydra writes .hydra/ into the run folder, stop if it belongs to another run (unless resuming)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("ckpt_path") or is_secondary_rank():
            return  # resuming into its own folder is allowed; other ranks share rank 0's folder
        run_dir = Path(str(config.hydra.run.dir))
        found = existing_run_files(run_dir)
        if found:
            # Hydra turns an Exception raised in a callback into a warning and carries on, so exit here:
            # SystemExit is not an Exception.
            print(
                f"error: run folder {run_dir} already holds a run ({', '.join(found)}); pick a new "
                "hydra.run.dir or resume with ckpt_path=last",
                file=sys.stderr,
            )
            raise SystemExit(2)
