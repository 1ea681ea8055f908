"""train.py's settings: prepare() turns the composed config into one typed, frozen TrainSettings that preflight and
train() share, so train() reads the run's seed, threads, logger and resume point from one place."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import FAST_TRAIN, compose_config

from difflab.run.prepare import TrainSettings, prepare


def test_a_fresh_run_is_read_once_into_frozen_typed_settings(tmp_path):
    run = tmp_path / "run"
    cfg = compose_config("train", [*FAST_TRAIN, "seed=7", "cpu_threads=1"], run)
    settings = prepare(cfg, run)
    assert isinstance(settings, TrainSettings)
    assert (settings.run_dir, settings.seed, settings.cpu_threads) == (run, 7, 1)
    assert (settings.resume, settings.stored_config, settings.step) == (None, None, 0)
    assert settings.init_from is None and not settings.logs_to_wandb  # FAST_TRAIN logs to CSV
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 8  # type: ignore[misc]


def test_a_resume_holds_its_checkpoint_step_and_stored_config(tiny_run):
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    cfg = compose_config("train", [*FAST_TRAIN, "logger=wandb", f"ckpt_path={ckpt}"], tiny_run)
    settings = prepare(cfg, tiny_run)
    assert settings.resume == ckpt and settings.step == 2
    assert settings.stored_config["model"]["_target_"] == cfg.model._target_
    assert settings.logs_to_wandb
