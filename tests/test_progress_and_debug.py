"""What a researcher sees: progress lines in a log file (no terminal), and the debug configs running."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import FAST_TRAIN, compose_config, run_cli

from difflab.run import train


def test_a_run_logged_to_a_file_shows_steps_rate_eta_and_loss(tmp_path: Path, tiny_ckpt: Path) -> None:
    fast = [o for o in FAST_TRAIN if not o.startswith("trainer.enable_progress_bar")]
    result = run_cli(
        "train.py", *fast, "trainer.max_steps=3", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("train: ")]
    assert lines and re.match(r"train: 3/3 steps · [\d.]+ steps/s · ETA 0:00 · train/loss [\d.]+", lines[-1])
    assert "difflab train" in result.stdout and "parameters" in result.stdout  # the summary at start
    assert "Tip" not in result.stderr + result.stdout and "anonymous" not in result.stderr + result.stdout

    out = tmp_path / "samples"
    result = run_cli("sample.py", f"ckpt={tiny_ckpt}", "n=4", "batch_size=2", "sampler.steps=3", f"out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"sampling 4 images: 6/6 steps · [\d.]+ steps/s · [\d.]+ images/s", result.stdout), (
        result.stdout
    )


@pytest.mark.parametrize("debug", ["default", "overfit", "fdr", "profile"])
def test_debug_configs_run_on_the_cpu_and_keep_no_checkpoints(debug: str, tmp_path: Path) -> None:
    cfg = compose_config(
        "train", [f"debug={debug}", "trainer.max_steps=2", "model=unet_tiny"], tmp_path / "run"
    )
    assert cfg.trainer.accelerator == "cpu" and cfg.callbacks.get("model_checkpoint") is None
    metrics = train(cfg)
    assert metrics["train/loss"] > 0
    assert not (tmp_path / "run" / "checkpoints").exists()
