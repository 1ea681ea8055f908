"""Which process this is: a DDP rank other than 0, a job SLURM (or submitit) has requeued, its SLURM job id."""

from __future__ import annotations

import os

from .torchrun import earlier_attempts_folder


def is_secondary_rank() -> bool:
    """True in a DDP process other than global rank 0: Lightning's children (LOCAL_RANK), other nodes
    (NODE_RANK) and SLURM tasks (SLURM_PROCID) all join the run folder rank 0 has just created."""
    return any(os.environ.get(var, "0") != "0" for var in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "RANK"))


def is_requeued_job() -> bool:
    """True where a last.ckpt in the run folder can only be this job's own, written before a requeue: a SLURM
    job SLURM has restarted (SLURM_RESTART_COUNT > 0), any job submitit launched (SUBMITIT_EXECUTOR is set;
    submitit reruns a requeued job with the same overrides in the same folder, locally too), or a job torchrun
    restarted after an earlier attempt claimed its run folder (cluster.torchrun)."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0").strip()
    requeued = restarts not in ("", "0") or bool(os.environ.get("SUBMITIT_EXECUTOR"))
    return requeued or earlier_attempts_folder() is not None


def slurm_job_id() -> str | None:
    """<array job>_<task> for an array task, else SLURM_JOB_ID; None outside SLURM."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID") or None
