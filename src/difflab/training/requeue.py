"""Put a preempted SLURM job back in the queue once its checkpoint is written."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from typing import TYPE_CHECKING

from ..cluster.jobs import slurm_job_id
from .resume_advice import resume_advice

if TYPE_CHECKING:  # torch and Lightning load where a run needs them
    from lightning.pytorch.loggers import Logger

    from .preemption import Preempted

log = logging.getLogger("difflab")


def _is_submitit_handler(handler: object) -> bool:
    owner = getattr(handler, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("submitit")


def requeue(stop: Preempted, is_global_zero: bool, loggers: list[Logger]) -> None:
    """Requeue this job (rank 0) and end the process. The W&B run is marked as preempting (not failed): the
    requeued job resumes it under the same id. A Ctrl-C is never requeued.

    Rank 0's exit status is the run's; the other ranks end with 0, their part (the checkpoint) done: one ending
    non-zero would have srun (--kill-on-bad-exit, or a cluster's KillOnBadExit=1) kill rank 0 before its
    `scontrol requeue`, or Lightning's process observer (ranks it started) kill rank 0 before it has ended.
    """
    from lightning.pytorch.loggers import WandbLogger

    if not is_global_zero:
        if _is_submitit_handler(stop.previous_handler):
            stop.previous_handler(stop.signum, None)  # on these ranks submitit's handler only logs
        stop.code = 0
        raise stop
    if stop.interrupted:  # the user stopped the run: nothing brings it back by itself
        print(f"{stop}; {resume_advice(stop.path)}", file=sys.stderr)
        raise stop
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger.experiment is not None:
            logger.experiment.mark_preempting()
    if _is_submitit_handler(stop.previous_handler):
        # submitit's handler records the resubmission, runs `scontrol requeue` and exits.
        stop.previous_handler(stop.signum, None)
    elif (job_id := slurm_job_id()) is not None and re.fullmatch(r"[0-9_]+", job_id):
        try:
            result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
        except OSError as error:  # no scontrol on PATH (a container under SLURM): before, a raw errno line
            result = subprocess.CompletedProcess([], 127, "", f"{error.strerror or error}: scontrol")
        if result.returncode == 0:
            # No checkpoint when the requeue signal came in set-up: the job starts again as it started. (A sharded
            # checkpoint is a folder.)
            then = f"it resumes from {stop.path}" if stop.path.exists() else "it starts again as this job did"
            log.warning("requeued SLURM job %s; %s", job_id, then)
        else:
            log.error("scontrol requeue %s failed: %s", job_id, (result.stderr or result.stdout).strip())
            print(f"{stop}; {resume_advice(stop.path)}", file=sys.stderr)
    else:
        print(f"{stop}; {resume_advice(stop.path)}", file=sys.stderr)
    raise stop
