"""train.py started by torchrun (2 CPU processes over gloo): every rank writes into the one run folder rank 0
claimed. Before, each rank picked a dated folder of its own (two folders per run), and with hydra.run.dir=<folder>
rank 0 found rank 1's .hydra/ there and refused the folder as another run's."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, TORCHRUN, TWO_CPU_RANKS, every_error, rank_pid, run_torchrun
from omegaconf import OmegaConf

from difflab.checkpoint import load_model
from difflab.cluster.devices import check_matches_started_processes

TWO_STEPS_ON_TWO_RANKS = [*TWO_CPU_RANKS, "trainer.max_steps=2"]


def torchrun_train(*args: str, root: Path) -> subprocess.CompletedProcess:
    return run_torchrun(
        "train.py", *TWO_STEPS_ON_TWO_RANKS, *args, env={"DIFFLAB_ROOT": str(root)}, timeout=400
    )


def test_a_named_run_folder_is_shared_by_every_rank(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = torchrun_train(f"hydra.run.dir={run}", root=tmp_path)
    assert result.returncode == 0, every_error(result)
    assert load_model(run / "checkpoints" / "last.ckpt").global_step == 2
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]


def test_torchrun_processes_that_the_trainer_does_not_count_are_refused_in_one_line(tmp_path: Path) -> None:
    """Before, trainer.devices left at 1 under torchrun's 2 processes started no DDP: each process trained the
    whole run on its own, one after the other, into the one folder (rank 1's last.ckpt over rank 0's)."""
    run = tmp_path / "run"
    one_device = [a for a in TWO_STEPS_ON_TWO_RANKS if a not in ("trainer=ddp", "trainer.devices=2")]
    result = run_torchrun(
        "train.py", *one_device, f"hydra.run.dir={run}", env={"DIFFLAB_ROOT": str(tmp_path)}, timeout=400
    )
    assert result.returncode != 0
    errors = {line for line in result.stderr.splitlines() if line.startswith("error: ")}
    assert errors == {
        "error: torchrun started 2 processes (WORLD_SIZE=2) but trainer.devices=1 × trainer.num_nodes=1 makes 1: "
        "each process would train the whole run on its own; give trainer.devices=2 (torchrun's --nproc_per_node)"
    }, result.stderr[-3000:]
    assert not run.exists()  # given back, as every refused run leaves nothing behind


def test_torchrun_on_two_nodes_asks_for_the_nodes_the_trainer_leaves_out(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(
        ValueError, match=r"makes 4: .* give trainer\.devices=4 trainer\.num_nodes=2 \(torchrun"
    ):
        check_matches_started_processes({"devices": 4, "num_nodes": 1})
    check_matches_started_processes({"devices": 4, "num_nodes": 2})
    check_matches_started_processes({"devices": "auto", "num_nodes": 1})  # Lightning takes what it is given
    # trainer=slurm's devices resolve only in a SLURM job (review: "HydraConfig was not set" came out instead).
    slurm = OmegaConf.create({"devices": "${hydra:launcher.tasks_per_node}", "num_nodes": 1})
    check_matches_started_processes(slurm)


def test_a_dated_run_folder_is_one_folder_for_every_rank(tmp_path: Path) -> None:
    result = torchrun_train(root=tmp_path)
    assert result.returncode == 0, every_error(result)
    (day,) = (tmp_path / "outputs" / "train").iterdir()
    (run,) = day.iterdir()  # one folder for the run, not one per rank
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / ".hydra" / "config.yaml").is_file()


def test_a_job_torchrun_restarts_resumes_in_its_own_folder_from_its_last_checkpoint(tmp_path: Path) -> None:
    """torchrun --max-restarts restarts every rank when one dies; before, rank 0 claimed a fresh dated folder and
    the job trained again from step 0, its first folder and checkpoints left behind."""
    steps = [a for a in TWO_CPU_RANKS if not a.startswith("trainer.val_check")]
    command = [*TORCHRUN[:-1], "--nproc_per_node=2", "--max-restarts=1", "train.py", *steps]
    command += ["trainer.max_steps=40", "trainer.val_check_interval=40"]
    command += ["callbacks.model_checkpoint.every_n_train_steps=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIFFLAB_ROOT": str(tmp_path)}
    pipes = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    with subprocess.Popen(command, cwd=ROOT, env=env, text=True, **pipes) as job:
        deadline = time.monotonic() + 240
        while job.poll() is None and time.monotonic() < deadline:
            if list((tmp_path / "outputs").glob("train/*/*/checkpoints/last.ckpt")):
                break
            time.sleep(0.1)
        assert job.poll() is None, (
            f"the run ended before a rank could be stopped: {job.stdout.read()[-3000:]}"
        )
        os.kill(rank_pid(job.pid, 1), signal.SIGKILL)  # a rank lost mid-run: a node gone, out of memory
        output, _ = job.communicate(timeout=300)
    assert job.returncode == 0, output[-3000:]
    (day,) = (tmp_path / "outputs" / "train").iterdir()
    (run,) = day.iterdir()  # the restart went back into the job's folder
    assert load_model(run / "checkpoints" / "last.ckpt").global_step == 40
    resumed = [p.name for p in (run / ".hydra").iterdir() if p.name.startswith("resumed_step_")]
    assert len(resumed) == 1, output[-3000:]  # from its last checkpoint, not from step 0
    assert int(resumed[0].removeprefix("resumed_step_")) >= 4
