"""train.py and sample.py started by srun (the sbatch recipe Lightning documents: `srun python train.py` with one task
per GPU), faked here with two CPU processes started at once with the variables srun gives each task. Every task of
train.py must write into the one run folder task 0 claims, and a requeued job must go back into it; sample.py's
tasks share the samples as torchrun's processes do."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LITE_EVAL, ROOT, TWO_CPU_RANKS, files_of, run_cli

from difflab.checkpoint import load_model
from difflab.cluster.jobs import job_attempt, srun_step
from difflab.cluster.processes import Processes, started_processes


def srun(
    *args: str,
    root: Path,
    job: str,
    restarts: int = 0,
    script: str = "train.py",
    own: tuple[list[str], list[str]] = ([], []),
) -> list[subprocess.CompletedProcess]:
    """`srun --ntasks-per-node=2 python <script> …` in job `job`, its SLURM_RESTART_COUNT-th run; `own`: each
    task's own further arguments (srun running a command per task)."""
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
    for name in ("MASTER_PORT", "MASTER_ADDR", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        base.pop(name, None)
    tasks = [
        subprocess.Popen(
            [sys.executable, script, *(TWO_CPU_RANKS if script == "train.py" else []), *args, *own[rank]],
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
    try:
        for task in tasks:
            stdout, stderr = task.communicate(timeout=300)
            results.append(subprocess.CompletedProcess(task.args, task.returncode, stdout, stderr))
    finally:
        for task in tasks:  # a task left waiting for one that failed (srun without --kill-on-bad-exit)
            task.kill()
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


TWO_TASK_STEP = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "3", "SLURM_NTASKS": "2", "SLURM_JOB_NAME": "train"}
ARRAY_TASK = {"SLURM_ARRAY_JOB_ID": "70", "SLURM_ARRAY_TASK_ID": "5"}
TORCHRUN_INSIDE = {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "n1"}


@pytest.mark.parametrize(
    "environment, step",
    [
        (TWO_TASK_STEP, "77_3"),
        ({**TWO_TASK_STEP, **ARRAY_TASK}, "70_5_3"),
        ({"SLURM_JOB_ID": "77"}, None),  # the batch script itself: one process, a dated folder as anywhere
        # One task (`srun --pty bash`, then train.py after train.py): dated folders, as on any machine.
        ({**TWO_TASK_STEP, "SLURM_NTASKS": "1"}, None),
        ({**TWO_TASK_STEP, "SLURM_JOB_NAME": "interactive"}, None),  # Lightning's interactive job names too
        ({**TWO_TASK_STEP, "SUBMITIT_EXECUTOR": "slurm"}, None),  # submitit names the folder
        ({**TWO_TASK_STEP, **TORCHRUN_INSIDE}, None),  # torchrun's rank 0 hands its folder over
    ],
)
def test_the_srun_step_that_names_a_run_folder(monkeypatch, environment: dict[str, str], step: str | None):
    for name in {**TWO_TASK_STEP, **ARRAY_TASK, **TORCHRUN_INSIDE, "SUBMITIT_EXECUTOR": ""}:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert srun_step() == step


def as_one_process_and_as_two_tasks(script: str, args: list[str], one: Path, two: Path, root: Path) -> str:
    """Run `script` with out=`one` as one process, then with out=`two` as the two tasks of an srun step; every run
    must succeed. Returns what task 0 printed."""
    alone = run_cli(script, *args, f"out={one}")
    assert alone.returncode == 0, alone.stderr[-2000:]
    job = str(random.randrange(1000, 9999))
    tasks = srun(*args, f"out={two}", root=root, job=job, script=script)
    for task in tasks:
        assert task.returncode == 0, task.stderr[-3000:]
    return tasks[0].stdout + tasks[0].stderr


def test_the_tasks_of_an_srun_step_share_the_samples_and_write_what_one_process_writes(
    tiny_ckpt, tmp_path: Path
):
    """Before, each task was a sample.py of its own: task 0 made all the samples alone, and task 1 was refused the
    output folder task 0 had claimed (or both sampled into it)."""
    common = [f"ckpt={tiny_ckpt}", "n=10", "batch_size=3", "cpu_threads=1", "sampler=ddim", "sampler.steps=4"]
    printed = as_one_process_and_as_two_tasks(
        "sample.py", common, tmp_path / "one", tmp_path / "two", tmp_path
    )
    assert "2 processes (cpu) share it, 3 images per batch each" in printed
    written, expected = files_of(tmp_path / "two"), files_of(tmp_path / "one")
    assert len([name for name in written if name.startswith("images/")]) == 10
    assert written == expected  # PNGs, grid.png, samples.npz and settings.json, byte for byte


def test_tasks_started_with_different_arguments_are_refused_in_one_line(tiny_ckpt, tmp_path: Path):
    """Rank 0 writes what rank 0 was asked for: task 1's seed would have been silently ignored."""
    common = [
        f"ckpt={tiny_ckpt}",
        "n=4",
        "cpu_threads=1",
        "sampler=ddim",
        "sampler.steps=2",
        f"out={tmp_path / 's'}",
    ]
    job = str(random.randrange(1000, 9999))
    tasks = srun(*common, root=tmp_path, job=job, script="sample.py", own=(["seed=0"], ["seed=1"]))
    for task in tasks:
        assert task.returncode == 2, task.stderr[-3000:]
        assert (
            "error: process 1 of 2 was started with other arguments than process 0 (seed=1): the processes share "
            "one command; start independent runs one process each (srun --ntasks=1)"
        ) in task.stderr
    assert not (tmp_path / "s").exists()


def test_a_task_of_an_srun_step_reads_its_place_from_slurms_variables(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "MASTER_PORT", "SUBMITIT_EXECUTOR", "TORCHELASTIC_USE_AGENT_STORE"):
        monkeypatch.delenv(name, raising=False)
    slurm = {"SLURM_JOB_ID": "123456", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "4", "SLURM_PROCID": "2"}
    for name, value in {**slurm, "SLURM_LOCALID": "0", "SLURM_STEP_NODELIST": "gpu[3-4]"}.items():
        monkeypatch.setenv(name, value)
    # The third task runs on the second node; all meet on the first, at Lightning's port for job 123456.
    assert started_processes() == Processes(2, 4, 0, meet_at="tcp://gpu3:18456")
    monkeypatch.setenv("SLURM_PROCID", "4")
    with pytest.raises(ValueError, match=r"^SLURM_PROCID=4 is not a task of SLURM_NTASKS=4 \(0 to 3\)$"):
        started_processes()
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert started_processes() == Processes()  # srun with one task: one process


def test_the_attempt_of_a_job_a_launcher_restarts(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    assert job_attempt() is None  # nothing restarts a plain process
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert job_attempt() == ("slurm 77", 0)
    monkeypatch.setenv("SLURM_STEP_ID", "1")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert job_attempt() == ("slurm 77 step 1", 2)  # SLURM requeued it twice
    torchrun = {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "n1", "TORCHELASTIC_RUN_ID": "r9"}
    for name, value in {**torchrun, "TORCHELASTIC_RESTART_COUNT": "3"}.items():
        monkeypatch.setenv(name, value)
    assert job_attempt() == ("torchrun r9", 3)


def test_every_task_of_an_srun_step_writes_into_the_run_folder_the_user_named(tmp_path: Path):
    """Before, task 1's Hydra wrote .hydra/ into the named folder too, and task 0 could find it there first and
    refuse the folder as holding another run."""
    run = tmp_path / "named"
    job = str(random.randrange(1000, 9999))
    for task in srun("trainer.max_steps=2", f"hydra.run.dir={run}", root=tmp_path, job=job):
        assert task.returncode == 0, task.stderr[-3000:]
    assert load_model(run / "checkpoints" / "last.ckpt").global_step == 2
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    hydra_files = [p for p in tmp_path.rglob(".hydra")]
    assert hydra_files == [run / ".hydra"]  # task 1 wrote none, here or in a dated folder


def test_the_tasks_of_an_srun_step_score_what_one_process_scores(tiny_ckpt, tmp_path: Path):
    common = [f"ckpt={tiny_ckpt}", "n=14", "batch_size=4", "cpu_threads=1", "sampler.steps=3", *LITE_EVAL]
    common.append(f"metrics.cache_dir={tmp_path / 'cache'}")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    printed = as_one_process_and_as_two_tasks("evaluate.py", common, one, two, tmp_path)
    assert "2 processes (cpu) share it, 4 images per batch each" in printed
    report_one, report_two = json.loads(one.read_text()), json.loads(two.read_text())
    assert report_two["metrics"] == report_one["metrics"]
    assert report_two["generated"]["n"] == 14
