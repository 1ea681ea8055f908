"""`python train.py` straight from an sbatch script (one GPU, no srun) that SLURM requeues (`--requeue`, a
preemption, a node failure): the batch script runs again from the top, and each train.py in it goes back into the
folder its earlier attempt ran in and resumes from its last.ckpt. Before, the requeued job took a new dated folder
and trained from step 0. Faked here with the variables SLURM gives a batch script."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import CLI_FAST, ROOT, run_cli

from difflab.checkpoint import load_model
from difflab.runs.job_record import earlier_run, remember_run

STEPS = [o for o in CLI_FAST if not o.startswith(("trainer.max_steps", "trainer.val_check"))]
STEPS += ["trainer.max_steps=40", "trainer.val_check_interval=40", "callbacks.sample_grid.every_n_steps=0"]
STEPS += ["callbacks.model_checkpoint.every_n_train_steps=4"]


def batch_job(root: Path, job: str, restarts: int) -> dict[str, str]:
    """The environment of an sbatch script's own process, in its job's `restarts`-th run."""
    slurm = {
        "SLURM_JOB_ID": job,
        "SLURM_JOB_NAME": "train",
        "SLURM_NTASKS": "1",
        "SLURM_RESTART_COUNT": str(restarts),
    }
    return {"DIFFLAB_ROOT": str(root), **slurm}


def runs_in(root: Path) -> list[Path]:
    return sorted(
        p for p in (root / "outputs" / "train").rglob("*") if (p / ".hydra" / "config.yaml").is_file()
    )


def test_a_requeued_batch_script_resumes_each_run_in_its_folder(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **batch_job(tmp_path, "7001", 0)}
    pipes = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    with subprocess.Popen(
        [sys.executable, "train.py", *STEPS], cwd=ROOT, env=env, text=True, **pipes
    ) as first:
        deadline = time.monotonic() + 240
        while first.poll() is None and time.monotonic() < deadline:
            if list((tmp_path / "outputs").glob("train/*/*/checkpoints/last.ckpt")):
                break
            time.sleep(0.1)
        assert first.poll() is None, f"the run ended before it could be killed: {first.stdout.read()[-3000:]}"
        first.send_signal(signal.SIGKILL)  # preempted past the grace time, a node lost
        first.communicate(timeout=60)
    (run,) = runs_in(tmp_path)

    requeued = run_cli("train.py", *STEPS, env=batch_job(tmp_path, "7001", 1))
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert f"SLURM requeued the job: back into its run folder {run}" in requeued.stdout
    assert runs_in(tmp_path) == [run]  # no second folder
    assert load_model(run / "checkpoints" / "last.ckpt").global_step == 40
    resumed = [p.name for p in (run / ".hydra").iterdir() if p.name.startswith("resumed_step_")]
    assert len(resumed) == 1 and int(resumed[0].removeprefix("resumed_step_")) >= 4  # not from step 0

    # Another job's runs, and this job's run of another command, start in folders of their own.
    other = run_cli("train.py", *STEPS, "trainer.max_steps=4", env=batch_job(tmp_path, "7001", 1))
    assert other.returncode == 0, other.stderr[-3000:]
    assert len(runs_in(tmp_path)) == 2 and "back into its run folder" not in other.stdout


def test_a_requeued_job_finds_the_last_run_of_its_command_that_still_exists(tmp_path: Path) -> None:
    record = tmp_path / "outputs" / "train" / "slurm" / "9.runs"
    runs = {}
    for name in ("a", "b", "a_again", "gone", "c"):
        runs[name] = tmp_path / name
        (runs[name] / ".hydra").mkdir(parents=True)
    remember_run(record, ["optim.lr=1"], runs["a"])
    remember_run(record, ["optim.lr=2"], runs["b"])
    remember_run(record, ["optim.lr=1"], runs["a_again"])
    with record.open("a") as file:
        file.write('{"command": ["optim.lr=2"], "ru')  # cut short by a kill
    remember_run(record, ["optim.lr=3"], runs["gone"])
    remember_run(record, ["optim.lr=5"], runs["c"])
    (runs["gone"] / ".hydra").rmdir()
    assert earlier_run(record, ["optim.lr=1"]) == runs["a_again"].resolve()
    assert earlier_run(record, ["optim.lr=2"]) == runs["b"].resolve()
    assert earlier_run(record, ["optim.lr=3"]) is None  # its folder holds no run any more
    assert earlier_run(record, ["optim.lr=4"]) is None
    assert (
        earlier_run(record, ["optim.lr=5"]) == runs["c"].resolve()
    )  # on a line of its own after the cut one
    assert earlier_run(tmp_path / "no.runs", ["optim.lr=1"]) is None
