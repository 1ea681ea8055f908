"""How each rank of a stopped run ends: rank 0 carries the run's exit status (and requeues a SLURM job); the others
end with 0 once the checkpoint is written, so that nothing watching them ends rank 0 first."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from difflab.training import Preempted
from difflab.training.requeue import requeue


def stopped(signum: int = signal.SIGUSR2) -> Preempted:
    return Preempted(int(signum), 40, Path("run/checkpoints/last.ckpt"), None)


def test_a_secondary_task_of_a_slurm_job_ends_cleanly_and_leaves_the_requeue_to_rank_0(monkeypatch):
    # A task ending non-zero first would have srun (--kill-on-bad-exit, or a cluster's KillOnBadExit=1) kill
    # rank 0 before its `scontrol requeue`: the job would end instead of coming back.
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with pytest.raises(Preempted) as raised:
        requeue(stopped(), is_global_zero=False, loggers=[])
    assert raised.value.code == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_outside_slurm_the_other_ranks_end_cleanly_and_rank_0_says_it_stopped(monkeypatch, capsys, signum):
    # A rank Lightning started ending non-zero has Lightning's process observer kill rank 0 within 5 seconds,
    # before it has finished its own ending (closing the W&B run); rank 0's exit status is the run's.
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(Preempted) as raised:
        requeue(stopped(signum), is_global_zero=False, loggers=[])
    assert raised.value.code == 0 and capsys.readouterr().err == ""
    with pytest.raises(Preempted) as raised:
        requeue(stopped(signum), is_global_zero=True, loggers=[])
    assert raised.value.code == (130 if signum == signal.SIGINT else Preempted.EXIT_CODE)
    assert "resume with ckpt_path=last hydra.run.dir=run\n" in capsys.readouterr().err


def test_a_slurm_job_without_scontrol_says_so_and_how_to_resume(monkeypatch, capsys, caplog, tmp_path):
    # A container under SLURM: before, "error: [Errno 2] No such file or directory: 'scontrol'", exit 2, no advice.
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol there
    with caplog.at_level("ERROR", logger="difflab"), pytest.raises(Preempted) as raised:
        requeue(stopped(), is_global_zero=True, loggers=[])
    assert raised.value.code == Preempted.EXIT_CODE
    assert "scontrol requeue 4242 failed: No such file or directory: scontrol" in caplog.text
    assert "resume with ckpt_path=last hydra.run.dir=run\n" in capsys.readouterr().err
