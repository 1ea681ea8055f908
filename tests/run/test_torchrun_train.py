"""train.py started by torchrun (2 CPU processes over gloo): every rank writes into the one run folder rank 0
claimed. Before, each rank picked a dated folder of its own (two folders per run), and with hydra.run.dir=<folder>
rank 0 found rank 1's .hydra/ there and refused the folder as another run's."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import run_torchrun

from difflab.checkpoint import load_model

TWO_STEPS_ON_TWO_RANKS = [
    "model=unet_tiny",
    "trainer=ddp",
    "trainer.devices=2",
    "trainer.accelerator=cpu",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data.batch_size=16",
    "logger=none",
    "sampler.steps=2",
    "callbacks.sample_grid.every_n_steps=0",
    "cpu_threads=1",
]


def torchrun_train(*args: str, root: Path) -> subprocess.CompletedProcess:
    return run_torchrun(
        "train.py", *TWO_STEPS_ON_TWO_RANKS, *args, env={"DIFFLAB_ROOT": str(root)}, timeout=400
    )


def test_a_named_run_folder_is_shared_by_every_rank(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = torchrun_train(f"hydra.run.dir={run}", root=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_model(run / "checkpoints" / "last.ckpt").global_step == 2
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]


def test_a_dated_run_folder_is_one_folder_for_every_rank(tmp_path: Path) -> None:
    result = torchrun_train(root=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (day,) = (tmp_path / "outputs" / "train").iterdir()
    (run,) = day.iterdir()  # one folder for the run, not one per rank
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / ".hydra" / "config.yaml").is_file()
