"""Comparing runs: one PNG with a line per run, whichever logger each run used; bad input named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST_TRAIN, compose_config, run_cli
from PIL import Image

from difflab.compare import find_runs, main, run_labels
from difflab.run import train
from difflab.runlogs import run_series


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding two finished runs, one logged as CSV and one as TensorBoard."""
    folder = tmp_path_factory.mktemp("sweep")
    for name, logger, lr in (("0", "csv", "2e-4"), ("1", "tensorboard", "1e-3")):
        overrides = [*FAST_TRAIN, f"logger={logger}", f"optim.lr={lr}", "trainer.max_steps=4"]
        train(compose_config("train", overrides, folder / name))
    return folder


def test_each_logger_gives_the_same_series(sweep: Path) -> None:
    csv_run, tb_run = run_series(sweep / "0"), run_series(sweep / "1")
    assert set(csv_run) >= {"train/loss", "val/loss"} and set(tb_run) >= {"train/loss", "val/loss"}
    for key in ("train/loss", "val/loss"):
        assert [step for step, _ in csv_run[key]] == [step for step, _ in tb_run[key]]
    assert len(csv_run["train/loss"]) == 4 and len(csv_run["val/loss"]) == 2
    assert csv_run["train/loss"] != tb_run["train/loss"]  # different learning rates


def test_a_sweep_folder_becomes_one_png_with_a_line_per_run(sweep: Path, tmp_path: Path, capsys) -> None:
    assert find_runs([sweep]) == [sweep / "0", sweep / "1"]
    assert run_labels(find_runs([sweep])) == ["0", "1"]  # no Hydra overrides recorded: the folder names
    out = tmp_path / "compare.png"
    assert main([str(sweep), "--out", str(out)]) == 0
    assert "2 runs, train/loss, val/loss -> " in capsys.readouterr().out
    assert Image.open(out).size[0] > 600
    assert main([str(sweep), "--out", str(out)]) == 2  # never overwritten
    assert "already exists" in capsys.readouterr().err


def test_folders_without_runs_or_metrics_are_named(sweep: Path, tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path), "--out", str(tmp_path / "a.png")]) == 2
    assert "holds no run logs" in capsys.readouterr().err
    assert main([str(sweep), "--metrics", "val/nope", "--out", str(tmp_path / "b.png")]) == 2
    assert "none of val/nope was logged" in capsys.readouterr().err


def test_a_short_sweep_with_the_default_logging_compares_runs_named_by_their_overrides(
    tmp_path: Path, capsys
) -> None:
    sweep = tmp_path / "sweep"
    quick = [
        "model=unet_tiny",
        "trainer=cpu",
        "trainer.enable_progress_bar=false",
        "callbacks.sample_grid=null",
    ]
    result = run_cli(
        "train.py", "-m", "optim.lr=1e-3,2e-4", *quick, "trainer.max_steps=20", "logger=csv",
        f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    runs = find_runs([sweep])
    assert run_labels(runs) == ["optim.lr=0.001", "optim.lr=0.0002"]  # what differs, not the folders 0 and 1
    assert main([str(sweep), "--out", str(tmp_path / "compare.png")]) == 0
    shown = capsys.readouterr().out
    assert f"optim.lr=0.001: {sweep / '0'}" in shown and "2 runs, train/loss -> " in shown
