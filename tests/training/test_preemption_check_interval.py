"""Under DDP the ranks agree on a preemption signal only every N optimizer steps (one collective then, none on
the other steps), and a signal on any rank still saves at such a step; one process saves at the next step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import FAST_TRAIN, ROOT

from difflab.training import CheckpointOnSignal, Preempted


class FakeTrainer(SimpleNamespace):
    """What CheckpointOnSignal reads of a Trainer; counts the collectives (strategy.reduce) and the saves."""

    def __init__(self, world_size: int) -> None:
        super().__init__(
            global_step=0,
            world_size=world_size,
            is_global_zero=True,
            checkpoint_callbacks=[],
            checkpoint_callback=None,
        )
        self.reduced_at: list[int] = []
        self.saved_at: list[int] = []
        self.strategy = SimpleNamespace(root_device=torch.device("cpu"), reduce=self._reduce)
        # What a stop calls to log the step's metrics first (compat.log_step_before_stopping).
        self.logged_at: list[int] = []
        self._logger_connector = SimpleNamespace(
            update_train_step_metrics=lambda: self.logged_at.append(self.global_step)
        )

    def _reduce(self, tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
        self.reduced_at.append(self.global_step)
        return tensor  # one fake rank: the sum is its own flags

    def save_checkpoint(self, path: Path, weights_only: bool | None = None) -> None:
        self.saved_at.append(self.global_step)


def run_steps(
    callback: CheckpointOnSignal, trainer: FakeTrainer, steps: int, signal_at: int, signum: int | None = None
) -> int | None:
    """Take optimizer steps 1..steps; the signal (the requeue one unless `signum`) arrives during step
    `signal_at`. The step of Preempted, if any."""
    for step in range(1, steps + 1):
        callback.on_train_batch_start(trainer, None)
        if step == signal_at:
            callback._on_signal(signum or callback.signum, None)
        trainer.global_step = step
        try:
            callback.on_train_batch_end(trainer, None)
        except Preempted as stop:
            return stop.step
    return None


def test_under_ddp_the_flags_are_reduced_only_every_n_steps_and_the_save_waits_for_one(tmp_path):
    callback = CheckpointOnSignal(tmp_path / "last.ckpt", signum=signal.SIGUSR2, check_every_n_steps=20)
    trainer = FakeTrainer(world_size=2)
    assert run_steps(callback, trainer, steps=100, signal_at=41) == 60
    assert trainer.reduced_at == [20, 40, 60]
    assert trainer.saved_at == [60]


def test_one_process_saves_at_the_end_of_the_signalled_step_without_a_collective(tmp_path):
    callback = CheckpointOnSignal(tmp_path / "last.ckpt", signum=signal.SIGUSR2, check_every_n_steps=20)
    trainer = FakeTrainer(world_size=1)
    assert run_steps(callback, trainer, steps=100, signal_at=3) == 3
    assert trainer.reduced_at == [] and trainer.saved_at == [3]
    assert trainer.logged_at == [3]  # the stopped step's metrics reach the loggers before the stop


@pytest.mark.parametrize("world_size", [1, 2])
def test_sigterm_saves_then_stops_outside_slurm_and_goes_on_under_it(tmp_path, world_size):
    stop = CheckpointOnSignal(tmp_path / "last.ckpt", signum=signal.SIGUSR2, check_every_n_steps=20)
    trainer = FakeTrainer(world_size=world_size)
    expected = 60 if world_size > 1 else 41
    assert run_steps(stop, trainer, steps=100, signal_at=41, signum=signal.SIGTERM) == expected
    assert trainer.saved_at == [expected]

    slurm = CheckpointOnSignal(
        tmp_path / "last.ckpt", signum=signal.SIGUSR2, stop_on_sigterm=False, check_every_n_steps=20
    )
    trainer = FakeTrainer(world_size=world_size)
    assert run_steps(slurm, trainer, steps=100, signal_at=41, signum=signal.SIGTERM) is None
    assert trainer.saved_at == [expected]  # saved once, and training went on to step 100


def test_the_interval_must_be_at_least_one(tmp_path):
    with pytest.raises(ValueError, match="check_every_n_steps must be at least 1"):
        CheckpointOnSignal(tmp_path / "last.ckpt", check_every_n_steps=0)


EVERY = 4
# FAST_TRAIN as two CPU ranks of one DDP run, without a logger.
TWO_RANKS = [o for o in FAST_TRAIN if not o.startswith(("trainer=", "trainer.max_steps=", "logger="))] + [
    "trainer=ddp",
    "trainer.devices=2",
    "trainer.accelerator=cpu",
    "logger=none",
    "cpu_threads=1",
    f"preemption_check_every_n_steps={EVERY}",
]


def two_rank_run(*overrides: str, **env: str) -> subprocess.CompletedProcess:
    """train.py as two CPU ranks with `overrides`, this checkout's src/ and tests/ (the probes) importable, outside
    SLURM unless `env` says otherwise."""
    return subprocess.run(
        [sys.executable, "train.py", *TWO_RANKS, *overrides],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_two_process_ddp_saves_a_signalled_rank_at_a_multiple_of_n_with_no_collective_in_between(tmp_path):
    """SIGUSR2 to rank 1 only, during step 5: both ranks save step 8 and stop (exit 3, requeued once); the
    steps that are not multiples of N make no collective of their own (nor Lightning's SIGTERM broadcast)."""
    run, probe = tmp_path / "run", tmp_path / "probe"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    (bin_dir / "scontrol").chmod(0o755)
    job = two_rank_run(
        "trainer.max_steps=1000",
        "trainer.val_check_interval=1000",
        "callbacks.sample_grid=null",
        "callbacks.model_checkpoint.every_n_train_steps=1000",
        f"loss_check_every_n_steps={EVERY}",
        "+callbacks.probe._target_=collective_probe.CollectiveProbe",
        f"+callbacks.probe.dirpath={probe}",
        "+callbacks.probe.signal_rank=1",
        "+callbacks.probe.signal_at_step=5",
        f"hydra.run.dir={run}",
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        SLURM_JOB_ID="4242",  # no SLURM_NTASKS: Lightning's own SLURM support stays out of this
    )
    assert job.returncode == 3, job.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 * EVERY
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    for rank in (0, 1):
        counts = torch.load(probe / f"rank{rank}.pt")
        assert max(counts) == 2 * EVERY, counts  # both ranks reached the save step, no further
        quiet = {step: n for step, n in counts.items() if step % EVERY and n}
        assert not quiet, f"rank {rank}: collectives at steps that are not multiples of {EVERY}: {quiet}"
        assert counts[EVERY] > 0, "the check at step N made no collective: it was not measured"


@pytest.mark.slow
def test_two_process_ddp_gives_a_grid_up_for_a_signal_on_one_rank_and_both_save_that_step(tmp_path):
    """SIGTERM to rank 1 only as the step-2 grid samples (the ranks' regular check comes at step 4): both ranks
    give the grid up, agree, save step 2 and stop (exit 3); none waits in the grid's gather."""
    run = tmp_path / "run"
    job = two_rank_run(
        "trainer.max_steps=8",
        "callbacks.model_checkpoint.every_n_train_steps=1000",
        "sampler._target_=signal_probe.SignallingDDIM",
        f"+sampler.marker={tmp_path / 'signalled'}",
        "+sampler.rank=1",
        f"hydra.run.dir={run}",
    )
    assert job.returncode == 3, job.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    assert not (run / "samples" / "step_0000002.png").exists()


@pytest.mark.parametrize(("rank_zero", "said"), [(True, True), (False, False)])
def test_a_signal_every_rank_receives_is_announced_by_rank_zero_only(tmp_path, caplog, rank_zero, said):
    # Ctrl-C, SLURM and torchrun signal every rank: before, each rank logged the same warning.
    callback = CheckpointOnSignal(tmp_path / "last.ckpt", stop_on_sigterm=True)
    trainer = FakeTrainer(world_size=2)
    trainer.is_global_zero = rank_zero
    callback.setup(trainer, None, "fit")
    with caplog.at_level("WARNING", logger="difflab"):
        callback._on_signal(signal.SIGTERM, None)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == (["received SIGTERM: checkpointing at the end of this step"] if said else [])
    assert callback.stop_requested  # every rank acts on it
