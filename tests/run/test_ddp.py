"""Two-process DDP on the CPU (gloo), through the real CLI: what a multi-GPU user relies on."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, every_error, run_cli
from hydra.utils import instantiate
from omegaconf import OmegaConf

from difflab.checkpoint import load_model
from difflab.data.scoring import dataset_id, uint8_batches
from difflab.diffusion.generate import generate
from difflab.generation import build_sampler
from difflab.io.write_images import to_uint8
from difflab.metrics import Evaluator
from difflab.runlogs import METRICS_FILE, read_rows

pytestmark = pytest.mark.slow

STEPS = 30
FID_SAMPLES = 11  # odd, so one rank's shard is padded and the padding must not show up


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short 2-process run with the FID callback, W&B offline and a probe of each rank's weights."""
    base = tmp_path_factory.mktemp("ddp")
    overrides = [
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        f"trainer.max_steps={STEPS}",
        "trainer.val_check_interval=10",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "model=unet_tiny",
        "data.batch_size=32",
        "optim.lr=2e-3",
        "lr_scheduler=none",
        "logger=[wandb,csv]",
        "sampler.steps=3",
        "callbacks=[default,fid]",
        f"callbacks.model_checkpoint.every_n_train_steps={STEPS}",
        f"callbacks.sample_grid.every_n_steps={STEPS}",
        "callbacks.sample_grid.num_samples=5",
        f"callbacks.fid.every_n_steps={STEPS}",
        f"callbacks.fid.num_samples={FID_SAMPLES}",
        "callbacks.fid.batch_size=4",
        f"callbacks.fid.save_samples_to={base / 'fid_samples'}",
        "metrics.num_reference=40",
        "metrics.kid_subset_size=10",
        f"metrics.cache_dir={base / 'cache'}",
        "+callbacks.probe._target_=ddp_probe.RankProbe",
        f"+callbacks.probe.dirpath={base / 'probe'}",
        "cpu_threads=1",
        f"hydra.run.dir={base / 'run'}",
    ]
    this_checkout = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])  # not the installed difflab
    proc = run_cli("train.py", *overrides, env={"PYTHONPATH": this_checkout}, timeout=600)
    assert proc.returncode == 0, every_error(proc)
    (base / "console.txt").write_text(proc.stdout + proc.stderr)
    return base


def test_ddp_console_holds_no_warning_raised_inside_lightning(ddp_run: Path) -> None:
    # The grid and FID callbacks gather through Lightning's all_gather, which calls a function torch 2.14
    # deprecates: each rank printed that warning with a site-packages path, nothing a user can act on.
    assert "all_gather is deprecated" not in (ddp_run / "console.txt").read_text()


def test_ddp_run_writes_one_run_folder_and_a_normal_checkpoint(ddp_run: Path) -> None:
    run = ddp_run / "run"
    ckpt = run / "checkpoints" / "last.ckpt"
    loaded = load_model(ckpt)  # what sample.py does: same kind of checkpoint as a single-process run
    assert loaded.weights == "ema" and loaded.global_step == STEPS
    # Files come from rank 0 only: one grid per step, one W&B run, one CSV log, one line per step's loss.
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["final.png", f"step_{STEPS:07d}.png"]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    assert len(list(run.rglob("metrics.csv"))) == 1
    logged = [row["step"] for row in read_rows(run / METRICS_FILE) if "train/loss" in row]
    assert logged == sorted(set(logged)) and logged


def test_ddp_ranks_hold_identical_raw_and_ema_weights(ddp_run: Path) -> None:
    ranks = [torch.load(ddp_run / "probe" / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    for kind in ("raw", "ema"):
        for key, value in ranks[0][kind].items():
            torch.testing.assert_close(ranks[1][kind][key], value, rtol=0, atol=0, msg=f"{kind} {key}")
    changed = any(not torch.equal(ranks[0]["raw"][k], ranks[0]["ema"][k]) for k in ranks[0]["raw"])
    assert changed, "EMA weights equal the raw ones: the average was never updated"


def test_ddp_training_loss_goes_down(ddp_run: Path) -> None:
    (metrics,) = (ddp_run / "run").rglob("metrics.csv")
    losses = [float(r["train/loss"]) for r in csv.DictReader(metrics.open()) if r.get("train/loss")]
    assert len(losses) >= STEPS - 1
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.7 * first, f"loss {first:.3f} -> {last:.3f}"


def test_fid_callback_scores_exactly_k_distinct_samples_across_ranks(ddp_run: Path) -> None:
    (path,) = (ddp_run / "fid_samples").glob("step_*.npz")
    saved = np.load(path)
    images = torch.from_numpy(saved["images"])
    assert images.shape[0] == FID_SAMPLES and int(saved["num_scored"]) == FID_SAMPLES
    assert len(torch.unique(images.flatten(1), dim=0)) == FID_SAMPLES, "duplicate samples across ranks"
    # The gathered set is samples 0..K-1 in order: the same images one process makes from the same weights.
    loaded = load_model(ddp_run / "run" / "checkpoints" / "last.ckpt")
    sampler = build_sampler(loaded.config["sampler"], loaded)
    fid_cfg = loaded.config["callbacks"]["fid"]
    expected = to_uint8(
        generate(sampler, loaded.net, range(FID_SAMPLES), loaded.sample_shape, fid_cfg["seed"])
    )
    assert (expected.int() - images.int()).abs().max() <= 1
    # The scores reached the loggers, under the metric's honest name.
    (metrics,) = (ddp_run / "run").rglob("metrics.csv")
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("val/fd_effl0")]
    assert len(rows) == 1 and float(rows[0]["val/fd_effl0"]) > 0
    assert {"val/kid", "val/precision", "val/recall"} <= rows[0].keys()
    # The ranks' merged statistics score exactly what one process scores on the same K images.
    data = instantiate(OmegaConf.create(loaded.config["data"]))
    # The callback's own settings: a reference cached with another keep_features is recomputed, not reused.
    evaluator = Evaluator(**loaded.config["metrics"])
    split = data.dataset_for("val")
    reference, hit = evaluator.reference(dataset_id(data), 8, lambda: uint8_batches(split, limit=40))
    assert hit  # the callback wrote it
    alone = evaluator.scores(evaluator.statistics(evaluator.embed(images)[0]), reference)
    assert float(rows[0]["val/fd_effl0"]) == pytest.approx(alone["fd_effl0"], rel=1e-5)
    assert float(rows[0]["val/precision"]) == pytest.approx(alone["precision"])
    assert float(rows[0]["val/recall"]) == pytest.approx(alone["recall"])
    assert (ddp_run / "run" / "checkpoints" / "best.ckpt").is_file()
