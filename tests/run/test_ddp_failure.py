"""A DDP run (two CPU processes Lightning starts) that fails on rank 0: one line, nothing left running or written."""

from __future__ import annotations

import os

import pytest
from conftest import ROOT, TWO_CPU_RANKS, one_error_line, run_cli

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
        env={"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])},
    )
    assert one_error_line(result) == "error: probe: rank 0 failed"
    # A fresh run refused before it logged gives its folder back: the other ranks' logs too.
    assert not run.exists(), sorted(p.name for p in run.iterdir())
