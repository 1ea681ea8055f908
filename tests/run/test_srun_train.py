"""train.py started by srun (the sbatch recipe Lightning documents: `srun python train.py` with one task per GPU),
faked here with two CPU processes started at once with the variables srun gives each task. Every task must write
into the one run folder task 0 claims, and a requeued job must go back into it."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from difflab.checkpoint import load_model
from difflab.cluster.jobs import srun_step

TWO_TASKS = [
    "model=unet_tiny",
    "trainer=ddp",
    "trainer.devices=2",
    "trainer.accelerator=cpu",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data.batch_size=16",
    "logger=none",
    "sampler.steps=2",
    "callbacks.sample_grid.every_n_steps=0",
    "cpu_threads=1",
]


def srun(*args: str, root: Path, job: str, restarts: int = 0) -> list[subprocess.CompletedProcess]:
    """`srun --ntasks-per-node=2 python train.py …` in job `job`, its SLURM_RESTART_COUNT-th run."""
    slurm = {
        "SLURM_JOB_ID": job,  # Lightning's port: 15000 + its last four digits
        "SLURM_JOB_NAME": "train",
        "SLURM_STEP_ID": "0",
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "127.0.0.1",
        "SLURM_RESTART_COUNT": str(restarts),
    }
    base = {**os.environ, "OMP_NUM_THREADS": "1", "DIFFLAB_ROOT": str(root), **slurm}
    base.pop("MASTER_PORT", None)
    tasks = [
        subprocess.Popen(
            [sys.executable, "train.py", *TWO_TASKS, *args],
            cwd=ROOT,
            env={**base, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    results = []
    for task in tasks:
        stdout, stderr = task.communicate(timeout=400)
        results.append(subprocess.CompletedProcess(task.args, task.returncode, stdout, stderr))
    return results


def test_every_task_of_an_srun_step_writes_into_one_run_folder_and_a_requeue_resumes_in_it(tmp_path: Path):
    job = str(random.randrange(1000, 9999))
    for task in srun("trainer.max_steps=2", root=tmp_path, job=job):
        assert task.returncode == 0, task.stderr[-3000:]
    runs = [p for p in (tmp_path / "outputs" / "train").rglob("*") if (p / ".hydra").is_dir()]
    assert runs == [tmp_path / "outputs" / "train" / "slurm" / f"{job}_0"]
    run = runs[0]
    assert load_model(run / "checkpoints" / "last.ckpt").global_step == 2
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]

    # SLURM requeues the job (same id, SLURM_RESTART_COUNT=1) with a longer budget: it resumes in its folder.
    for task in srun("trainer.max_steps=4", root=tmp_path, job=job, restarts=1):
        assert task.returncode == 0, task.stderr[-3000:]
    assert [p for p in (tmp_path / "outputs" / "train").rglob("*") if (p / ".hydra").is_dir()] == [run]
    assert load_model(run / "checkpoints" / "last.ckpt").global_step == 4
    assert [p.name for p in (run / ".hydra").iterdir() if p.name.startswith("resumed_step_")] == [
        "resumed_step_0000002"
    ]


@pytest.mark.parametrize(
    "environment, step",
    [
        ({"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "3"}, "77_3"),
        (
            {
                "SLURM_JOB_ID": "77",
                "SLURM_ARRAY_JOB_ID": "70",
                "SLURM_ARRAY_TASK_ID": "5",
                "SLURM_STEP_ID": "0",
            },
            "70_5_0",
        ),
        ({"SLURM_JOB_ID": "77"}, None),  # the batch script itself: one process, a dated folder as anywhere
        (
            {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SUBMITIT_EXECUTOR": "slurm"},
            None,
        ),  # submitit names it
        # torchrun inside srun: torchrun's rank 0 hands its folder over (cluster.torchrun)
        (
            {
                "SLURM_JOB_ID": "77",
                "SLURM_STEP_ID": "0",
                "TORCHELASTIC_USE_AGENT_STORE": "True",
                "MASTER_ADDR": "n1",
            },
            None,
        ),
    ],
)
def test_the_srun_step_that_names_a_run_folder(monkeypatch, environment: dict[str, str], step: str | None):
    for name in (
        "SLURM_JOB_ID",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_STEP_ID",
        "SUBMITIT_EXECUTOR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert srun_step() == step
