"""A sweep's job locks its folder as a single run does (run.preflight.hold), so a resume started into the job's
folder while the job trains (`train.py ckpt_path=last hydra.run.dir=<sweep>/<job>`) is refused in one line
instead of writing the same checkpoints, metrics and log. Hydra gives a job no hook before it writes the job's
.hydra files: the sweep folder's own lock (runs.sweep_folder) keeps other sweeps out of them."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from ..cluster.jobs import is_requeued_job, is_secondary_rank
from ..runs.folder import hold_run_folder


def hold_sweep_jobs_folder(run_dir: Path) -> None:
    """Lock `run_dir` when this is a sweep's job (rank 0); a ValueError, the job's one-line refusal, when a live
    process trains there. A requeued job goes on with a warning, as a requeued single run does."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN or is_secondary_rank():
        return
    try:
        hold_run_folder(run_dir)
    except ValueError as error:
        if not is_requeued_job():
            raise
        print(f"warning: {error}; going on, as this job was requeued")
