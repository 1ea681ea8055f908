"""A DDP run (two CPU processes Lightning starts) that fails on rank 0: one line, nothing left running or written."""

from __future__ import annotations

import pytest
import torch
from conftest import PROBES, TWO_CPU_RANKS, one_error_line, run_cli

pytestmark = pytest.mark.slow


def test_rank_0_failing_ends_the_other_ranks_with_one_line_and_leaves_no_folder(tmp_path):
    # Before, rank 1 ran on after rank 0 had failed: on a CPU it then failed in its next collective (a gloo
    # traceback after the error line); on GPUs (NCCL) it waited there, with its GPU held, for the collective's
    # timeout (30 minutes).
    run = tmp_path / "run"
    result = run_cli(
        "train.py",
        *TWO_CPU_RANKS,
        "trainer.max_steps=20",
        "+callbacks.fail._target_=failure_probe.FailOnOneRank",
        "+callbacks.fail.message='probe: rank 0 failed'",
        f"hydra.run.dir={run}",
        env=PROBES,
    )
    assert one_error_line(result) == "error: probe: rank 0 failed"
    # A fresh run refused before it logged gives its folder back: the other ranks' logs too.
    assert not run.exists(), sorted(p.name for p in run.iterdir())


def test_another_rank_failing_first_is_named_by_rank_0_in_one_line(tmp_path):
    # Before, rank 0 followed rank 1's error line with gloo's 100-line 'Connection closed by peer' traceback (exit
    # 1), as if it had failed on its own; the folder stayed, holding both logs.
    run = tmp_path / "run"
    result = run_cli(
        "train.py",
        *TWO_CPU_RANKS,
        "trainer.max_steps=20",
        "+callbacks.fail._target_=failure_probe.FailOnOneRank",
        "+callbacks.fail.rank=1",
        "+callbacks.fail.message='probe: rank 1 failed'",
        f"hydra.run.dir={run}",
        env=PROBES,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: probe: rank 1 failed",
        "error: DDP process 1 ended with exit 2 (its error is above); the others stopped with it",
    ], result.stderr[-3000:]
    assert not run.exists(), sorted(p.name for p in run.iterdir())


def test_another_rank_stopped_before_it_joins_gives_the_run_folder_back(tmp_path):
    """A stop (SIGTERM to the job, Ctrl-C) that reaches a process Lightning started while it is still setting up,
    rank 0 waiting for it to join. Before, Lightning's child-process observer killed rank 0 at once (exit 137) with
    nothing said, and the folder stayed claimed: the same command was refused as "a run that wrote no checkpoint"."""
    run = tmp_path / "run"
    result = run_cli(
        "train.py",
        *TWO_CPU_RANKS,
        "trainer.max_steps=20",
        "+callbacks.signal._target_=failure_probe.SignalWhenBuilt",
        f"hydra.run.dir={run}",
        env=PROBES,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: train.py stopped by SIGTERM; nothing was trained",
        "error: DDP process 1 ended with exit 143 (its error is above); the others stopped with it before the run "
        "saved or logged anything (its run folder was given back)",
    ], result.stderr[-3000:]
    assert not run.exists(), sorted(p.name for p in run.iterdir())


def test_sigterm_to_rank_0_in_the_final_grid_or_fid_ends_every_rank_with_one_line(tmp_path):
    # `kill <rank 0>` once training has ended. Before, Lightning's SIGTERM handler (given back at the end of
    # training) broadcast a flag in a collective the other rank never joined: rank 0 hung there, for ever on a
    # CPU (a second SIGTERM met the same handler) and for NCCL's timeout on GPUs.
    run = tmp_path / "run"
    result = run_cli(
        "train.py",
        *TWO_CPU_RANKS,
        "trainer.max_steps=4",
        "+callbacks.probe._target_=signal_probe.StepProbe",
        f"+callbacks.probe.dirpath={tmp_path / 'probe'}",
        "+callbacks.probe.signal_name=SIGTERM",
        "+callbacks.probe.at_train_end=true",
        "+callbacks.probe.rank=0",
        f"hydra.run.dir={run}",
        env=PROBES,
        timeout=120,
    )
    assert result.returncode == 143, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    saved = run / "checkpoints" / "last.ckpt"
    # The last step is written before the final grid and FID (a save then is a collective the other rank, not
    # signalled, would not join): before, its steps were lost.
    assert errors == [
        f"error: train.py stopped by SIGTERM; saved {saved} at step 4: resume with ckpt_path=last hydra.run.dir={run}"
    ], result.stderr[-3000:]
    assert torch.load(saved, map_location="cpu", weights_only=True)["global_step"] == 4
