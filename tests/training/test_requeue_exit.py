"""How each rank of a preempted SLURM job ends: rank 0 requeues the job, the other tasks must not end it first."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from difflab.training import Preempted
from difflab.training.requeue import requeue


def stopped() -> Preempted:
    return Preempted(int(signal.SIGUSR2), 40, Path("run/checkpoints/last.ckpt"), None)


def test_a_secondary_task_of_a_slurm_job_ends_cleanly_and_leaves_the_requeue_to_rank_0(monkeypatch):
    # A task ending non-zero first would have srun (--kill-on-bad-exit, or a cluster's KillOnBadExit=1) kill
    # rank 0 before its `scontrol requeue`: the job would end instead of coming back.
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with pytest.raises(Preempted) as raised:
        requeue(stopped(), is_global_zero=False, loggers=[])
    assert raised.value.code == 0


def test_outside_slurm_every_rank_ends_non_zero(monkeypatch):
    # torchrun (or a script) reads the exit code: the run did not finish.
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(Preempted) as raised:
        requeue(stopped(), is_global_zero=False, loggers=[])
    assert raised.value.code == Preempted.EXIT_CODE
