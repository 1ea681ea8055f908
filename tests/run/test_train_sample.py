"""End to end through Hydra's compose API: train a few steps, then sample from the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from PIL import Image

from difflab.checkpoint import load_model
from difflab.run.sample import sample
from difflab.run.train import train


def test_train_writes_checkpoints_grids_and_config(train_cfg):
    metrics = train(train_cfg)
    run = Path(train_cfg.paths.output_dir)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "checkpoints" / "step_0000002.ckpt").is_file()
    assert (run / "samples" / "step_0000002.png").is_file()
    assert (run / "samples" / "final.png").is_file()
    assert "train/loss" in metrics and "val/loss" in metrics
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4  # last.ckpt is the final step, not the last periodic one
    assert ckpt["difflab_config"]["model"]["base_channels"] == 16
    # EMA weights are the state_dict; the raw weights are kept for resume, and they differ.
    assert "current_model_state" in ckpt
    ema, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)


def test_sample_from_checkpoint_writes_pngs_grid_and_npz(tiny_ckpt, tmp_path):
    out = tmp_path / "samples"
    cfg = compose_config(
        "sample", [f"ckpt={tiny_ckpt}", "n=5", "sampler=ddim", "sampler.steps=3", f"out={out}"], tmp_path
    )
    sample(cfg)
    pngs = sorted((out / "images").glob("*.png"))
    assert len(pngs) == 5
    assert Image.open(pngs[0]).size == (8, 8)
    assert (out / "grid.png").is_file()
    arr = np.load(out / "samples.npz")["images"]
    assert arr.shape == (5, 8, 8, 1) and arr.dtype == np.uint8
    settings = json.loads((out / "settings.json").read_text())
    assert settings["weights"] == "ema" and settings["nfe"] == 3


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sampling_is_reproducible_and_uses_the_ddpm_sampler_too(tiny_ckpt, tmp_path, sampler):
    """The same seed gives the same samples, bit for bit; another seed gives other samples."""

    def samples(name: str, seed: int) -> np.ndarray:
        overrides = [f"ckpt={tiny_ckpt}", "n=3", f"sampler={sampler}", "sampler.steps=4", f"seed={seed}"]
        sample(compose_config("sample", [*overrides, f"out={tmp_path / name}"], tmp_path))
        return np.load(tmp_path / name / "samples.npz")["images"]

    first, again, other = samples("a", seed=1), samples("b", seed=1), samples("c", seed=2)
    np.testing.assert_array_equal(first, again)
    assert (first != other).mean() > 0.5  # most pixels differ, not a rounding flip or two


def test_loaded_model_rebuilds_from_checkpoint_alone(tiny_ckpt):
    loaded = load_model(tiny_ckpt)
    assert loaded.sample_shape == (1, 8, 8)
    assert loaded.schedule.timesteps == 1000 and loaded.weights == "ema"
    out = loaded.net(torch.zeros(2, 1, 8, 8), torch.tensor([0, 999]))
    assert out.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("logger", ["csv", "tensorboard", "wandb", "none"])
def test_every_logger_works(tmp_path, logger):
    from conftest import FAST_TRAIN

    cfg = compose_config("train", [*FAST_TRAIN, f"logger={logger}", "trainer.max_steps=2"], tmp_path / "run")
    train(cfg)
    run = tmp_path / "run"
    expected = {
        "csv": "csv/metrics.csv",
        "tensorboard": "tensorboard",
        "wandb": "wandb",
        "none": "checkpoints",
    }
    assert (run / expected[logger]).exists()
    if logger == "wandb":
        # The grid reaches W&B as an image at the step it was drawn (2). Training ends at that step, so the
        # final grid is that one (final.png is a copy), not drawn or logged a second time.
        from wandb_files import history_rows

        from difflab.tracking.wandb_logger import finish_wandb_run

        finish_wandb_run()  # train.py does this after train(); the run file is complete only then
        (wandb_run,) = (run / "wandb").glob("offline-run-*")
        images = [r for r in history_rows(wandb_run) if r.get("samples/_type") == "images/separated"]
        assert [r["trainer/global_step"] for r in images] == [2]
        assert (run / "samples" / "final.png").read_bytes() == (
            run / "samples" / "step_0000002.png"
        ).read_bytes()
        assert all(r["samples/width"] == 242 for r in images)  # 2x2 tiles of 8 px + padding, enlarged 11x
        assert images[0]["samples/captions"] == ["step 2 · DDIMSampler · NFE 2 · EMA weights"]


def test_log_model_uploads_the_last_checkpoint_written_between_periodic_ones(tmp_path):
    """Checkpoints every 2 steps, 3 steps: last.ckpt of step 3 (written by difflab's Checkpoint at the last step)
    reaches W&B as the model artifact too. Before, only step 2's files did: the run's final model was never
    uploaded, and a run shorter than every_n_train_steps uploaded none."""
    from conftest import FAST_TRAIN
    from wandb_files import wandb_records

    from difflab.tracking.wandb_logger import finish_wandb_run

    overrides = [*FAST_TRAIN, "logger=wandb", "logger.wandb.log_model=true", "trainer.max_steps=3"]
    train(compose_config("train", overrides, tmp_path / "run"))
    finish_wandb_run()
    (wandb_run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    artifacts = [r.artifact for r in wandb_records(wandb_run) if r.WhichOneof("record_type") == "artifact"]
    uploaded = [json.loads(a.metadata)["original_filename"] for a in artifacts]
    assert uploaded == ["step_0000002.ckpt", "last.ckpt", "last.ckpt"]  # last.ckpt at step 2, then at step 3


def test_the_make_train_recipe_composes_and_trains(tmp_path):
    from conftest import FAST_TRAIN

    fast = [o for o in FAST_TRAIN if not o.startswith("model=")]
    fast += ["callbacks.fid.num_samples=8", "metrics.num_reference=16", "metrics.kid_subset_size=8"]
    fast += [f"metrics.cache_dir={tmp_path / 'cache'}"]
    cfg = compose_config("train", ["experiment=digits_cpu", *fast, "trainer.max_steps=2"], tmp_path / "run")
    assert cfg.data.dataset == "digits" and cfg.data.image_size == 8
    assert cfg.model.base_channels == 16 and cfg.optim.lr == pytest.approx(1e-3)
    metrics = train(cfg)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert metrics["val/fd_effl0"] > 0  # the final model is scored once, at the end
