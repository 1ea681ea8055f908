"""trainer=fsdp on two CPU processes (gloo): FSDP2 fully_shard per block, its EMA, checkpoints and callbacks."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, every_error, one_error_line, run_cli

from difflab.checkpoint import load_model

STEPS = 8
FID_SAMPLES = 5  # odd: the ranks generate 3 and 2 samples, so they run different numbers of forwards
COMMON = [
    "trainer=fsdp",
    "trainer.devices=2",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "model=unet_tiny",
    "data.batch_size=16",
    "lr_scheduler=none",
    "sampler.steps=2",
    "cpu_threads=1",
]
THIS_CHECKOUT = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}


def cli(*args: str) -> None:
    result = run_cli("train.py", *COMMON, *args, env=THIS_CHECKOUT, timeout=900)
    assert result.returncode == 0, every_error(result)


def test_fsdp_with_fp16_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    run = tmp_path / "run"
    line = one_error_line(
        run_cli("train.py", *COMMON, "trainer.precision=16-mixed", f"hydra.run.dir={run}", env=THIS_CHECKOUT)
    )
    assert "trainer=fsdp" in line and "16-mixed" in line and "bf16-mixed" in line
    assert not run.exists() or not any(run.rglob("*.ckpt"))


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bf16-mixed, activation checkpointing, 2 micro-batches per step, validation, grid and FID callbacks."""
    base = tmp_path_factory.mktemp("fsdp")
    cli(
        f"trainer.max_steps={STEPS}",
        "trainer.precision=bf16-mixed",
        "trainer.strategy.activation_checkpointing=true",
        "trainer.accumulate_grad_batches=2",
        "trainer.val_check_interval=4",
        "optim.lr=2e-3",
        "logger=csv",
        "callbacks=[default,fid]",
        f"callbacks.model_checkpoint.every_n_train_steps={STEPS}",
        f"callbacks.sample_grid.every_n_steps={STEPS // 2}",
        "callbacks.sample_grid.num_samples=5",
        f"callbacks.fid.every_n_steps={STEPS}",
        f"callbacks.fid.num_samples={FID_SAMPLES}",
        "callbacks.fid.batch_size=2",
        "metrics.num_reference=20",
        "metrics.kid_subset_size=5",
        f"metrics.cache_dir={base / 'cache'}",
        "+callbacks.reference._target_=fsdp_probe.UnshardedEMAReference",
        f"+callbacks.reference.dirpath={base / 'probe'}",
        f"hydra.run.dir={base / 'run'}",
    )
    return base


@pytest.mark.slow
def test_fsdp_checkpoint_is_a_normal_one_that_sample_py_reads(fsdp_run: Path, tmp_path: Path) -> None:
    ckpt = fsdp_run / "run" / "checkpoints" / "last.ckpt"
    loaded = load_model(ckpt)
    assert loaded.weights == "ema" and loaded.global_step == STEPS
    out = tmp_path / "samples"
    result = run_cli("sample.py", f"ckpt={ckpt}", "n=3", "sampler.steps=2", f"out={out}", env=THIS_CHECKOUT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list(out.rglob("*.png"))) >= 3
    samples = sorted(p.name for p in (fsdp_run / "run" / "samples").iterdir())
    assert samples == ["final.png", f"step_{STEPS // 2:07d}.png", f"step_{STEPS:07d}.png"]


@pytest.mark.slow
def test_fsdp_sharded_ema_equals_an_ema_of_the_full_weights(fsdp_run: Path) -> None:
    reference = torch.load(fsdp_run / "probe" / "reference.pt")
    assert reference["updates"] == STEPS
    checkpoint = torch.load(fsdp_run / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    ema = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()}
    raw = {k.removeprefix("net."): v for k, v in checkpoint["current_model_state"].items()}
    assert ema.keys() == reference["ema"].keys()
    for key, value in reference["ema"].items():
        torch.testing.assert_close(ema[key], value, rtol=0, atol=0, msg=key)
    assert any(not torch.equal(ema[k], raw[k]) for k in ema), "the EMA never moved away from the raw weights"


@pytest.mark.slow
def test_fsdp_training_loss_is_finite_and_fid_is_scored(fsdp_run: Path) -> None:
    (metrics,) = (fsdp_run / "run").rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) >= STEPS and all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    fid = [float(r["val/fd_effl0"]) for r in rows if r.get("val/fd_effl0")]
    assert len(fid) == 1 and math.isfinite(fid[0]) and fid[0] > 0


@pytest.mark.slow
def test_fsdp_resume_matches_an_uninterrupted_fsdp_run(tmp_path: Path) -> None:
    """fp32, tolerance 0 as the DDP resume test: raw weights, EMA, optimizer state and losses."""
    common = [
        "logger=csv",
        "trainer.val_check_interval=3",
        "callbacks.model_checkpoint.every_n_train_steps=100",
    ]
    cli(*common, "trainer.max_steps=6", f"hydra.run.dir={tmp_path / 'a'}")
    cli(*common, "trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'b'}")
    cli(*common, "trainer.max_steps=6", f"hydra.run.dir={tmp_path / 'b'}", "ckpt_path=last")
    a, b = (
        torch.load(tmp_path / r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        for r in ("a", "b")
    )
    assert a["global_step"] == b["global_step"] == 6
    for kind in ("current_model_state", "state_dict"):
        assert a[kind].keys() == b[kind].keys()
        for key in a[kind]:
            torch.testing.assert_close(b[kind][key], a[kind][key], rtol=0, atol=0, msg=f"{kind} {key}")
    state_a, state_b = (c["optimizer_states"][0]["state"] for c in (a, b))
    for index in state_a:
        torch.testing.assert_close(state_b[index]["exp_avg_sq"], state_a[index]["exp_avg_sq"], rtol=0, atol=0)


@pytest.mark.slow
def test_a_dit_trains_under_fsdp_and_its_ema_grid_is_drawn(tmp_path: Path) -> None:
    """The DiT's sin-cos position table is a non-persistent buffer: the full EMA copy gathered for sampling must
    hold it too, or the grid is drawn with uninitialised memory and refused as non-finite."""
    run = tmp_path / "run"
    cli(
        "model=dit_tiny",
        "trainer.max_steps=2",
        "logger=none",
        "callbacks.sample_grid.num_samples=4",
        "+callbacks.probe._target_=fsdp_probe.SamplingNetBuffers",
        f"+callbacks.probe.dirpath={tmp_path / 'probe'}",
        f"hydra.run.dir={run}",
    )
    assert (run / "samples" / "final.png").is_file()
    buffers = torch.load(tmp_path / "probe" / "buffers.pt")
    assert "pos_embed" in buffers["net"]
    for name, value in buffers["net"].items():
        torch.testing.assert_close(buffers["sampling"][name], value, rtol=0, atol=0, msg=name)
