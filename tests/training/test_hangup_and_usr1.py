"""The two other signals that end a run without asking it: SIGHUP (the terminal or SSH session a run was started in
closed) saves the step and stops, as SIGTERM does, unless the run was started with nohup; SIGUSR1 (Lightning's
own SLURM requeue signal, `#SBATCH --signal=SIGUSR1@90`) saves and requeues, as SIGUSR2 does. Before, each
killed train.py on the spot (their default action): the steps since the last checkpoint were lost, and the
SLURM job was not requeued."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image
from test_preemption import env_with, last_step, probed_train

pytestmark = pytest.mark.slow


def picture_folder(tmp_path: Path) -> list[str]:
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(200):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    return ["data=folder", f"data.root={folder}", "data.image_size=8", "data.channels=1"]


def signalled_at_step_3(
    tmp_path: Path, signum: int, *overrides: str, max_steps: int = 100000, preexec=None, **env: str
) -> tuple[subprocess.Popen, Path]:
    """A run (data loader workers when `overrides` say so) whose whole process group gets `signum` once step 3 is
    done, as a terminal's hang-up or SLURM signals a job; its process and run folder."""
    run, probe = tmp_path / "run", tmp_path / "probe"
    job = subprocess.Popen(
        probed_train(run, probe, "logger=none", f"trainer.max_steps={max_steps}", *overrides),
        cwd=ROOT,
        env=env_with(tmp_path, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=preexec,
    )
    deadline = time.monotonic() + 240
    while not ((probe / "step").exists() and int((probe / "step").read_text() or 0) >= 3):
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1][-3000:]
        time.sleep(0.2)
    os.killpg(job.pid, signum)
    return job, run


def test_a_closed_terminal_saves_the_step_and_stops_with_its_loader_workers(tmp_path):
    workers = ["data.num_workers=2", "data.persistent_workers=true"]
    job, run = signalled_at_step_3(tmp_path, signal.SIGHUP, *picture_folder(tmp_path), *workers)
    _, stderr = job.communicate(timeout=240)
    assert job.returncode == 3, stderr[-3000:]
    assert "data loader worker" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    step = last_step(run)
    assert step >= 3
    assert f"stopped on SIGHUP at step {step} after saving {run / 'checkpoints' / 'last.ckpt'}" in stderr


def test_a_run_started_with_nohup_keeps_ignoring_sighup(tmp_path):
    job, run = signalled_at_step_3(
        tmp_path, signal.SIGHUP, max_steps=40, preexec=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)
    )
    _, stderr = job.communicate(timeout=240)
    assert job.returncode == 0, stderr[-3000:]
    assert last_step(run) == 40


def test_lightnings_slurm_requeue_signal_saves_and_requeues_the_job(tmp_path):
    job, run = signalled_at_step_3(tmp_path, signal.SIGUSR1, SLURM_JOB_ID="4242")
    stdout, stderr = job.communicate(timeout=240)
    assert job.returncode == 3, stderr[-3000:]
    assert last_step(run) >= 3
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert f"requeued SLURM job 4242; it resumes from {run / 'checkpoints' / 'last.ckpt'}" in stdout + stderr
