"""Never overwrite a run folder: a Hydra callback refuses one that already holds a run, and lets a resume (or a
requeued SLURM job) back into its own folder only once its checkpoint is known to fit the config."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from ..callbacks.run_config import CONFIG_KEY
from .errors import USER_ERRORS, one_line
from .resume import check_matches_checkpoint, is_requeued_job, read_resumable, resume_path


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


def _refuse(message: str) -> NoReturn:
    # Hydra turns an Exception raised in a callback into a warning and carries on, so exit here: SystemExit is
    # not an Exception.
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _keep_first_hydra_files(config: DictConfig, run_dir: Path, step: int) -> None:
    """Have Hydra write this resume's config to .hydra/resumed_step_<step>/, keeping the run's own .hydra files."""
    if not (run_dir / ".hydra").is_dir():
        return
    subdir, n = f".hydra/resumed_step_{step:07d}", 1
    while (run_dir / subdir).exists():
        n += 1
        subdir = f".hydra/resumed_step_{step:07d}_{n}"
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.output_subdir = subdir


class RefuseExistingRunDir(Callback):
    """Before Hydra writes .hydra/ into the run folder, stop if it belongs to another run.

    A resume (ckpt_path=last or a file) may write into the checkpoint's own run folder, or a new one, after
    its checkpoint has been read and compared with the config; a requeued SLURM job may go back into its
    folder. Either way nothing is written when the checkpoint is missing, unreadable or contradicts the config.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_secondary_rank():
            return  # other ranks share the folder rank 0 has just checked
        run_dir = Path(str(config.hydra.run.dir))
        found = existing_run_files(run_dir)
        try:
            resume = resume_path(config.get("ckpt_path"), run_dir)
            if resume is not None:
                ckpt = read_resumable(resume)
                check_matches_checkpoint(config, ckpt[CONFIG_KEY], resume)
        except USER_ERRORS as error:
            _refuse(one_line(error))
        if resume is not None:
            if found and run_dir.resolve() not in resume.resolve().parents:
                _refuse(
                    f"run folder {run_dir} already holds another run ({', '.join(found)}); resume {resume} "
                    f"into its own folder (hydra.run.dir={resume.resolve().parent.parent}) or a new one"
                )
            _keep_first_hydra_files(config, run_dir, int(ckpt.get("global_step", 0)))
            return
        if found and not is_requeued_job():
            _refuse(
                f"run folder {run_dir} already holds a run ({', '.join(found)}); pick a new hydra.run.dir or "
                "resume with ckpt_path=last"
            )
