"""Latent diffusion, as far as it goes: autoencoder=<run or diffusers folder> on a diffusion recipe trains the
denoiser on cached latents (scaled as LDM does), grids decode to images, the checkpoint records the autoencoder
and its scale factor, a resume with another autoencoder and a sampler reading the checkpoint are refused in one line."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, compose_config
from PIL import Image

import difflab
from difflab.autoencoder_checkpoint import load_autoencoder
from difflab.checkpoint import read_checkpoint
from difflab.run.train import train

TINY_AE = [
    *[o for o in FAST_TRAIN if not o.startswith(("model=", "callbacks.", "sampler."))],
    "model=autoencoder_kl_f4",
    "callbacks=autoencoder",
    "model.block_out_channels=[8,16,16]",
    "model.norm_num_groups=8",
    "model.layers_per_block=1",
]


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-step toy f4 autoencoder of the 8x8 digits (2x2x3 latents)."""
    run = tmp_path_factory.mktemp("ae") / "run"
    train(compose_config("train", [*TINY_AE, "trainer.max_steps=4"], run))
    return run


@pytest.fixture(scope="module")
def latent_run(autoencoder_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run, latent cache folder) of a 4-step latent U-Net on that autoencoder's latents."""
    base = tmp_path_factory.mktemp("ldm")
    overrides = [*FAST_TRAIN, f"autoencoder={autoencoder_run}", f"latent_cache_dir={base / 'cache'}"]
    train(compose_config("train", overrides, base / "run"))
    return base / "run", base / "cache"


def test_the_denoiser_trains_on_latents_and_the_checkpoint_records_the_autoencoder(
    autoencoder_run, latent_run
) -> None:
    run, cache = latent_run
    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
    config = ckpt["difflab_config"]
    assert (config["model"]["in_channels"], config["model"]["image_size"]) == (3, 2)  # 8x8 digits / f4
    assert config["autoencoder"] == str(autoencoder_run)
    recorded = ckpt["LatentDataModule"]
    assert recorded["autoencoder_hash"] == load_autoencoder(autoencoder_run).weights_hash
    assert recorded["scale_factor"] > 0
    assert sorted(p.name.split("-")[1] for p in cache.iterdir()) == ["train", "val"]


def test_sample_grids_show_decoded_images_not_latents(latent_run) -> None:
    grid = Image.open(latent_run[0] / "samples" / "final.png")
    # 4 decoded 8x8 digits, 2 a row with 2 px padding: 22 px, enlarged by 256 // 22 = 11. Undecoded 2x2 latents
    # would make a 10 px grid, enlarged to 250.
    assert grid.size == (242, 242)


def test_a_second_run_reuses_the_latent_cache(autoencoder_run, latent_run, tmp_path, caplog) -> None:
    _, cache = latent_run
    written = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    overrides = [
        *FAST_TRAIN,
        "trainer.max_steps=1",
        f"autoencoder={autoencoder_run}",
        f"latent_cache_dir={cache}",
    ]
    with caplog.at_level(logging.INFO, logger="difflab"):
        train(compose_config("train", overrides, tmp_path / "run"))
    assert caplog.text.count("(cached)") == 2
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == written


def test_a_resume_with_another_autoencoder_is_refused_in_one_line(latent_run, tmp_path) -> None:
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(1)
    other = tmp_path / "vae"  # the same latent shape (2x2x3), other weights
    diffusers.AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 32, 32),
        layers_per_block=1,
        latent_channels=3,
        norm_num_groups=32,
    ).save_pretrained(other)
    run = tmp_path / "run"
    shutil.copytree(latent_run[0], run)
    overrides = [
        *FAST_TRAIN,
        "trainer.max_steps=6",
        "ckpt_path=last",
        f"autoencoder={other}",
        f"latent_cache_dir={tmp_path / 'cache'}",
    ]
    with pytest.raises(
        ValueError, match=r"trained on the latents of autoencoder \w+ .* give the autoencoder"
    ) as error:
        train(compose_config("train", overrides, run))
    assert "\n" not in str(error.value)
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 4  # nothing overwritten


def test_loading_a_latent_checkpoint_for_sampling_is_refused_in_one_line(latent_run) -> None:
    with pytest.raises(ValueError, match=r"is a latent diffusion model .* not supported yet"):
        difflab.load(latent_run[0])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.image_size=6"], r"down factor 4 does not divide data.image_size=6"),
        (["callbacks=[default,fid]"], r"the FID callback does not decode latents yet"),
    ],
)
def test_latent_runs_it_cannot_make_are_one_line_errors(
    autoencoder_run, tmp_path, overrides, message
) -> None:
    cfg = compose_config(
        "train", [*FAST_TRAIN, f"autoencoder={autoencoder_run}", *overrides], tmp_path / "run"
    )
    with pytest.raises(ValueError, match=message):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
