"""A failure after a training step (a sample grid or FID evaluation out of memory, a user's callback) keeps the
steps trained: last.ckpt is written at that step, the error line says so, and the resume continues exactly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import CLI_FAST, ROOT, one_error_line, run_cli

pytestmark = pytest.mark.slow

# Periodic checkpoints never come in 6 steps: only the failure can write one.
RUN = [o for o in CLI_FAST if not o.startswith("callbacks.model_checkpoint.")] + [
    "callbacks.model_checkpoint.every_n_train_steps=1000"
]
WITH_PROBE = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}


PROBE = [
    "+callbacks.fail._target_=failure_probe.FailOnOneRank",
    "+callbacks.fail.message='probe: the grid failed'",
    "+callbacks.fail.at_step=3",
]


def failing(run: Path, *extra: str):
    """A 6-step run whose probe fails after step 3."""
    return run_cli(
        "train.py", *RUN, "trainer.max_steps=6", *PROBE, *extra, f"hydra.run.dir={run}", env=WITH_PROBE
    )


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_a_callback_failing_after_step_3_leaves_last_ckpt_at_step_3_and_the_resume_is_exact(tmp_path):
    # Before, the steps since the last periodic checkpoint were lost (here all 3: no checkpoint at all), and a
    # grid or FID evaluation due at a checkpoint's step runs before it is written (Lightning saves last).
    run, straight = tmp_path / "run", tmp_path / "straight"
    saved = run / "checkpoints" / "last.ckpt"
    line = one_error_line(failing(run))
    assert (
        line
        == f"error: probe: the grid failed; {saved} holds step 3: resume with ckpt_path=last hydra.run.dir={run} once it is fixed"
    )
    assert weights(run)["global_step"] == 3

    # A resume takes no key added with `+` from a run folder: the probe is typed again, now past the run's end.
    probe = [a for a in PROBE if "at_step" not in a] + ["+callbacks.fail.at_step=100"]
    resumed = run_cli("train.py", "ckpt_path=last", f"hydra.run.dir={run}", *probe, env=WITH_PROBE)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = run_cli("train.py", *RUN, "trainer.max_steps=6", f"hydra.run.dir={straight}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    a, b = weights(run), weights(straight)
    assert a["global_step"] == b["global_step"] == 6
    for key in ("state_dict", "current_model_state"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in b[key]), key


def test_diverged_weights_are_never_written_on_a_failure(tmp_path):
    run = tmp_path / "run"
    line = one_error_line(failing(run, "+callbacks.fail.poison=true"))
    assert line == "error: probe: the grid failed"
    assert not (run / "checkpoints" / "last.ckpt").exists()


def test_the_final_evaluation_failing_after_validation_keeps_the_last_step(tmp_path):
    # The final grid or FID runs before Lightning's own last save, and here after the final validation (step 6).
    run, straight = tmp_path / "run", tmp_path / "straight"
    line = one_error_line(failing(run, "+callbacks.fail.at_train_end=true", "trainer.val_check_interval=3"))
    assert line.endswith(
        f"{run / 'checkpoints' / 'last.ckpt'} holds step 6: resume with ckpt_path=last hydra.run.dir={run} once it is fixed"
    )
    whole = run_cli(
        "train.py", *RUN, "trainer.max_steps=6", "trainer.val_check_interval=3", f"hydra.run.dir={straight}"
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    a, b = weights(run), weights(straight)
    assert a["global_step"] == b["global_step"] == 6
    for key in ("state_dict", "current_model_state"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in b[key]), key


def test_a_failure_at_a_periodic_checkpoints_step_writes_that_checkpoint_too(tmp_path):
    # Lightning writes checkpoints after every other callback: a grid failing at step 2 with checkpoints every 2
    # steps left last.ckpt only, and the resume went on past step 2, so a run keeping every periodic checkpoint
    # (save_top_k=-1, for scores over training) had a gap there for good.
    run = tmp_path / "run"
    result = run_cli(
        "train.py",
        *RUN,
        "trainer.max_steps=6",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        *[a for a in PROBE if "at_step" not in a],
        "+callbacks.fail.at_step=2",
        f"hydra.run.dir={run}",
        env=WITH_PROBE,
    )
    saved = run / "checkpoints" / "last.ckpt"
    assert one_error_line(result).endswith(
        f"{saved} holds step 2: resume with ckpt_path=last hydra.run.dir={run} once it is fixed"
    )
    periodic = run / "checkpoints" / "step_0000002.ckpt"
    assert torch.load(periodic, map_location="cpu", weights_only=True)["global_step"] == 2
    assert weights(run)["global_step"] == 2
