"""Comparing runs: one PNG with a line per run, whichever logger each run used; bad input named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST_TRAIN, compose_config
from PIL import Image

from difflab.compare import find_runs, main
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
