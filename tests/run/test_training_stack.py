"""The training stack comes from the config, as lightning-hydra-template builds it: the LightningModule from
cfg.module, every callback from cfg.callbacks in the file's order, the Trainer from cfg.trainer untouched."""

from __future__ import annotations

import json
import logging

import torch
from conftest import FAST_TRAIN, compose_config

from difflab.callbacks import Checkpoint, SampleGrid, StoreRunConfig
from difflab.callbacks.progress_bar import StepProgressBar
from difflab.models import UNet
from difflab.run.train import build_callbacks, build_module
from difflab.training import EMA, CheckpointOnFailure, CheckpointOnSignal, DiffusionModule, SeedEachStep

IN_ORDER = [
    Checkpoint,
    EMA,
    CheckpointOnSignal,
    CheckpointOnFailure,
    SampleGrid,
    StoreRunConfig,
    SeedEachStep,
    StepProgressBar,
]


def test_every_callback_is_a_config_entry_built_in_the_files_order(tmp_path):
    cfg = compose_config("train", ["trainer.enable_progress_bar=true"], tmp_path / "run")
    callbacks = build_callbacks(cfg, {"marker": 1})
    assert [type(c) for c in callbacks] == IN_ORDER
    assert callbacks[5].config == {"marker": 1}  # the run's resolved config, stored in every checkpoint
    assert callbacks[6].seeds is not None
    assert str(callbacks[2].path) == str(callbacks[3].path) == f"{tmp_path / 'run'}/checkpoints/last.ckpt"


def test_callbacks_none_keeps_what_every_run_needs_and_a_hidden_bar_is_left_out(tmp_path):
    cfg = compose_config("train", ["callbacks=none", "trainer.enable_progress_bar=false"], tmp_path / "run")
    kept = [CheckpointOnSignal, CheckpointOnFailure, StoreRunConfig, SeedEachStep]
    assert [type(c) for c in build_callbacks(cfg, {})] == kept
    cfg = compose_config("train", ["callbacks.ema=null", "callbacks=[default,fid]"], tmp_path / "run")
    names = [type(c).__name__ for c in build_callbacks(cfg, {})]
    assert "EMA" not in names and names[-1] == "FIDCallback"


def test_the_lightning_module_is_instantiated_from_cfg_module(tmp_path):
    cfg = compose_config(
        "train",
        [*FAST_TRAIN, "prediction_type=v", "cond_drop_prob=0.3", "optim.lr=0.01", "compile=false"],
        tmp_path / "run",
    )
    module = build_module(cfg)
    assert isinstance(module, DiffusionModule) and isinstance(module.net, UNet)
    assert (module.prediction_type, module.cond_drop_prob) == ("v", 0.3)
    assert module.configure_optimizers()["optimizer"].defaults["lr"] == 0.01


def test_lr_scheduler_none_builds_a_module_with_a_constant_learning_rate(tmp_path):
    cfg = compose_config("train", [*FAST_TRAIN, "lr_scheduler=none"], tmp_path / "run")
    optimizer = build_module(cfg).configure_optimizers()
    assert isinstance(optimizer, torch.optim.Optimizer)


def test_a_run_shorter_than_its_validation_interval_validates_at_its_end(tmp_path):
    """Before, a 10-step run at the default val_check_interval=1000 logged no val/loss: an Optuna search on it
    stopped after its first trial ("optimized_metric=val/loss was not logged by this run")."""
    from difflab.run.train import train, validation_interval

    assert validation_interval(10, 1000) == 10
    assert (validation_interval(3000, 1000), validation_interval(-1, 1000), validation_interval(10, 0.5)) == (
        1000,
        1000,
        0.5,
    )
    overrides = [o for o in FAST_TRAIN if not o.startswith("trainer.val_check_interval")]
    metrics = train(compose_config("train", [*overrides, "trainer.max_steps=3"], tmp_path / "run"))
    assert "val/loss" in metrics


def test_validation_counts_optimizer_steps_under_gradient_accumulation(tmp_path):
    """Before, Lightning's interval counted batches: at accumulate_grad_batches=2 and an interval of 5 the run
    validated at steps 2, 5, 7, 10 (some of them part-way through a step)."""
    from difflab.run.train import train

    overrides = [o for o in FAST_TRAIN if not o.startswith("trainer.val_check_interval")]
    overrides += ["trainer.max_steps=10", "trainer.val_check_interval=5", "trainer.accumulate_grad_batches=2"]
    train(compose_config("train", overrides, tmp_path / "run"))
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "val/loss" in line] == [5, 10]


def test_callbacks_none_writes_no_checkpoint_and_says_so_at_the_end(tmp_path, caplog):
    """conf/callbacks/none.yaml: no periodic checkpoints. Before, Lightning added its own ModelCheckpoint and wrote
    checkpoints/epoch=0-step=4.ckpt, whose folder then sent a rerun to ckpt_path=last, which was not there. The run
    ends with a warning that its weights were not kept (before, nothing said so)."""
    from difflab.run.train import train

    overrides = [o for o in FAST_TRAIN if not o.startswith("callbacks.")] + ["callbacks=none"]
    with caplog.at_level(logging.WARNING, logger="difflab"):
        train(compose_config("train", overrides, tmp_path / "run"))
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
    assert sorted(p.name for p in (tmp_path / "run").rglob("*.ckpt")) == []
    assert "no checkpoint kept: the trained weights are not saved" in caplog.text
