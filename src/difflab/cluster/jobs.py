"""Which process this is: a DDP rank other than 0, a job SLURM (or submitit) has requeued, its SLURM job id, the
srun step it is a task of."""

from __future__ import annotations

import os

from .torchrun import earlier_attempts_folder, restart_count, under_torchrun


def is_secondary_rank() -> bool:
    """True in a DDP process other than global rank 0: Lightning's children (LOCAL_RANK), other nodes
    (NODE_RANK) and SLURM tasks (SLURM_PROCID) all join the run folder rank 0 has just created."""
    return any(os.environ.get(var, "0") != "0" for var in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "RANK"))


def is_requeued_job() -> bool:
    """True where a last.ckpt in the run folder can only be this job's own, written before a requeue: a SLURM
    job SLURM has restarted (SLURM_RESTART_COUNT > 0), any job submitit launched (SUBMITIT_EXECUTOR is set;
    submitit reruns a requeued job with the same overrides in the same folder, locally too), or a job torchrun
    restarted after an earlier attempt claimed its run folder (cluster.torchrun)."""
    requeued = _slurm_restarts() > 0 or bool(os.environ.get("SUBMITIT_EXECUTOR"))
    return requeued or earlier_attempts_folder() is not None


def slurm_job_id() -> str | None:
    """<array job>_<task> for an array task, else SLURM_JOB_ID; None outside SLURM."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID") or None


def srun_step() -> str | None:
    """<job id>_<step id> in one of the tasks of an srun step (`srun python train.py`, one task per GPU): a name
    every task of the step knows without asking the others, and that a requeued job (same id, steps counted again
    from 0) knows again. None outside a step of several tasks (a shell `srun --pty bash` opened runs one process
    after another, as on any machine; so does a job Lightning sees as interactive, named bash or interactive), and
    where the launcher names the run folder itself (submitit) or hands it over (torchrun: cluster.torchrun)."""
    step = os.environ.get("SLURM_STEP_ID", "").strip()
    tasks = os.environ.get("SLURM_NTASKS", "1").strip()
    if not step or not tasks.isdigit() or int(tasks) < 2 or slurm_job_id() is None:
        return None
    if os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    if os.environ.get("SUBMITIT_EXECUTOR") or under_torchrun():
        return None
    return f"{slurm_job_id()}_{step}"


def one_run_job() -> str | None:
    """The SLURM job id of a process that is its job's one run at a time (`python train.py` in a batch script, or
    a one-task srun step): the job SLURM requeues runs the script again, and such a run finds its folder by the
    job's record (runs.job_record). None elsewhere: srun steps of several tasks, submitit and torchrun place their
    runs themselves, and a shell Lightning sees as interactive is never requeued."""
    job = slurm_job_id()
    if job is None or srun_step() is not None or os.environ.get("SUBMITIT_EXECUTOR") or under_torchrun():
        return None
    return None if os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive") else job


def slurm_requeued() -> bool:
    """True in a job SLURM has started again (SLURM_RESTART_COUNT > 0)."""
    return _slurm_restarts() > 0


def job_attempt() -> tuple[str, int] | None:
    """(the job, which attempt of it this is) for a job its launcher may start again after a failure: torchrun's
    run id and restart count, or the SLURM job (and srun step) and SLURM_RESTART_COUNT; None for a process no
    launcher restarts."""
    if under_torchrun():
        return f"torchrun {os.environ.get('TORCHELASTIC_RUN_ID', '')}", restart_count()
    job = slurm_job_id()
    if job is None:
        return None
    step = os.environ.get("SLURM_STEP_ID", "").strip()
    return f"slurm {job}" + (f" step {step}" if step else ""), _slurm_restarts()


def _slurm_restarts() -> int:
    """SLURM_RESTART_COUNT: how often SLURM has requeued this job (0 when unset or not a number)."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "").strip()
    return int(restarts) if restarts.isdigit() else 0
