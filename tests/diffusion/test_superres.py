"""Super-resolution (SR3): training pairs, the wiring to the U-Net, sampling with an exact denoiser, and
train.py + sample.py mode=superres end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from analytic import ExactSRDenoiser
from conftest import FAST_TRAIN, compose_config, evaluate_first_batch, with_other_weights
from PIL import Image
from torch import Tensor
from torchvision.transforms.functional import to_tensor

import difflab
from difflab.checkpoint import load_model
from difflab.data import DataError, ImageDataModule
from difflab.diffusion import DDPMSampler, NoiseSchedule
from difflab.diffusion.conditioning import random_drop
from difflab.diffusion.superres import downsample, low_res_condition, nearest_upsample, upsample
from difflab.generation import grid_conditions, grid_tiles
from difflab.generation.superres import super_resolve
from difflab.run.common import fill_conditioning
from difflab.run.evaluate import evaluate
from difflab.run.sample import sample
from difflab.run.train import train

SR_TRAIN = [*FAST_TRAIN, "data.condition=superres", "data.sr_factor=2"]  # digits 4x4 -> 8x8


def batch_of(dm: ImageDataModule, trainer=None) -> tuple[Tensor, dict[str, Tensor]]:
    """A val batch of digits through on_after_batch_transfer (as on the device), with an optional fake trainer."""
    dm.setup()
    images, labels = next(iter(dm.val_dataloader()))
    dm.trainer = trainer
    return dm.on_after_batch_transfer([images, labels], 0)


def training_at(step: int) -> SimpleNamespace:
    return SimpleNamespace(training=True, global_step=step, global_rank=0)


def test_pairs_are_the_images_low_res_versions_upsampled():
    dm = ImageDataModule("digits", image_size=8, batch_size=16, condition="superres", sr_factor=2)
    images, cond = batch_of(dm)
    low = cond["low_res"]
    assert set(cond) == {"low_res"} and low.shape == images.shape == (16, 1, 8, 8)
    assert low.min() >= -1 and low.max() <= 1
    torch.testing.assert_close(low, upsample(downsample(images, 2), 8))
    assert not torch.allclose(low, images, atol=0.05)  # detail is lost: there is something to learn


def test_constant_images_stay_constant_down_and_up():
    constant = torch.full((2, 3, 16, 16), 0.3)
    assert downsample(constant, 4).shape == (2, 3, 4, 4)
    torch.testing.assert_close(downsample(constant, 4), torch.full((2, 3, 4, 4), 0.3))
    torch.testing.assert_close(low_res_condition(constant, 4), constant)
    # bicubic overshoot at a hard edge is clamped; pixel replication shows the input unchanged
    edge = torch.ones(1, 1, 4, 4)
    edge[..., :2] = -1
    assert upsample(edge, 16).abs().max() <= 1
    assert torch.equal(nearest_upsample(edge, 16)[..., 3::4, ::4], edge)


def test_noise_augmentation_is_seeded_per_step_and_only_in_training():
    def noisy(step: int | None, sr_noise: float = 0.5) -> Tensor:
        dm = ImageDataModule(
            "digits", image_size=8, batch_size=16, condition="superres", sr_factor=2, sr_noise=sr_noise
        )
        return batch_of(dm, None if step is None else training_at(step))[1]["low_res"]

    clean = noisy(None)
    torch.testing.assert_close(noisy(3, sr_noise=0.0), clean)
    assert torch.equal(noisy(3), noisy(3))  # a resumed run draws the same noise at the same step
    assert not torch.equal(noisy(3), noisy(4))
    per_sample = (noisy(3) - clean).flatten(1).abs().mean(1)
    assert per_sample.std() > 0.01  # each sample its own σ


def test_the_low_res_image_is_never_dropped():
    cond = {"low_res": torch.zeros(4, 1, 8, 8)}
    assert random_drop(cond, 1.0) is cond


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"sr_factor": 3}, "sr_factor=3 does not divide image_size=8"),
        ({"sr_factor": 1}, "sr_factor must be a whole number of at least 2"),
        ({"sr_noise": -0.1}, "sr_noise must be 0 or more"),
    ],
)
def test_bad_superres_data_settings_are_one_line(kwargs, fragment):
    with pytest.raises(DataError, match=fragment) as error:
        ImageDataModule("digits", image_size=8, condition="superres", **kwargs)
    assert "\n" not in str(error.value)


def test_config_wiring_sets_cond_channels_and_refuses_mismatches(tmp_path):
    cfg = compose_config("train", [*SR_TRAIN, "data=cifar10", "data.sr_factor=4"], tmp_path)
    fill_conditioning(cfg)
    assert cfg.model.cond_channels == 3
    cfg = compose_config("train", [*SR_TRAIN, "+model.cond_channels=3"], tmp_path)
    with pytest.raises(ValueError, match=r"model.cond_channels=3 but data.channels=1") as error:
        fill_conditioning(cfg)
    assert "\n" not in str(error.value)
    cfg = compose_config("train", [*SR_TRAIN, "model.num_classes=10"], tmp_path)
    with pytest.raises(ValueError, match="class-conditional super-resolution is not supported"):
        fill_conditioning(cfg)


def test_super_resolve_samples_the_exact_conditional_distribution():
    schedule = NoiseSchedule.from_name("linear", timesteps=1000)
    low = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.6
    std, n = 0.1, 24
    out = super_resolve(DDPMSampler(schedule), ExactSRDenoiser(schedule, std), low, size=16, n=n, seed=1)
    assert out.shape == (3 * n, 1, 16, 16)
    per_input = out.view(3, n, 1, 16, 16)
    mean = upsample(low, 16)
    assert (per_input.mean(1) - mean).abs().max() < 4 * std / n**0.5 + 0.01  # each output is of its own input
    assert per_input.std(1).mean() == pytest.approx(std, rel=0.1)
    # consistency: downsampled, the outputs match the data's own low-res (the noise averages out)
    assert (downsample(per_input.mean(1), 4) - downsample(mean, 4)).abs().mean() < 0.02
    # output k depends only on (seed, k): a different batch size gives the same pictures
    same = super_resolve(
        DDPMSampler(schedule), ExactSRDenoiser(schedule, std), low, size=16, n=n, seed=1, batch_size=7
    )
    torch.testing.assert_close(same, out)


def test_training_grid_shows_held_out_inputs_beside_their_outputs():
    dm = ImageDataModule("digits", image_size=8, batch_size=16, condition="superres", sr_factor=2)
    conditions = grid_conditions(dm.generation_task(6), 6)
    val = torch.stack([dm.dataset_for("val")[i][0] for i in range(6)])
    torch.testing.assert_close(
        conditions.cond_for([5, 0])["low_res"], upsample(downsample(val, 2), 8)[[5, 0]]
    )
    torch.testing.assert_close(conditions.inputs_for(range(6)), nearest_upsample(downsample(val, 2), 8))
    outputs = torch.zeros(6, 1, 8, 8)
    tiles, nrow = grid_tiles(conditions, outputs)
    assert tiles.shape == (12, 1, 8, 8) and nrow == 4  # 2 (input, output) pairs per row, 3 full rows
    torch.testing.assert_close(tiles[0::2], nearest_upsample(downsample(val, 2), 8))


def write_pngs(folder: Path, sizes: list[int]) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"in{i}.png")
    return folder


@pytest.fixture(scope="module")
def sr_ckpt(tmp_path_factory) -> Path:
    """A 4-step digits 4x4 -> 8x8 SR run (its grids are input | output pairs)."""
    run = tmp_path_factory.mktemp("sr") / "run"
    train(compose_config("train", SR_TRAIN, run))
    return run / "checkpoints" / "last.ckpt"


def test_train_then_sample_superres_writes_pngs_grid_and_npz(sr_ckpt, tmp_path, capsys):
    loaded = load_model(sr_ckpt)
    assert loaded.condition == "superres" and loaded.config["model"]["cond_channels"] == 1
    grid = Image.open(sr_ckpt.parent.parent / "samples" / "final.png")
    assert grid.size[0] > grid.size[1]  # 4 samples as 2 rows of (input, output) pairs: twice as wide

    inputs = write_pngs(tmp_path / "in", [4, 4, 8])
    out = tmp_path / "out"
    cfg = compose_config(
        "sample",
        [f"ckpt={sr_ckpt}", "mode=superres", f"image={inputs}", "n=2", "sampler.steps=2", f"out={out}"],
        tmp_path,
    )
    with pytest.warns(UserWarning, match=r"resized 1 to 4×4 \(in2.png 8×8\)"):
        sample(cfg)
    shown = capsys.readouterr().out  # progress as sample.py shows it: 1 batch × 2 sampler steps
    assert re.search(r"super-resolving 6 images: 2/2 steps · [\d.]+ steps/s · [\d.]+ images/s", shown), shown
    assert len(list((out / "images").glob("*.png"))) == 6
    assert Image.open(out / "images" / "00000.png").size == (8, 8)
    arr = np.load(out / "samples.npz")["images"]
    assert arr.shape == (6, 8, 8, 1) and arr.dtype == np.uint8
    # grid: 3 rows of input | bicubic | 2 outputs, 8 px tiles with 2 px padding, enlarged to >= 256 px wide
    width, height = 4 * 10 + 2, 3 * 10 + 2
    factor = 256 // width
    assert Image.open(out / "grid.png").size == (width * factor, height * factor)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["mode"] == "superres" and settings["input_size"] == [4, 4] and settings["sr_factor"] == 2
    assert settings["nfe"] == 2 and len(settings["inputs"]) == 3
    assert (
        settings["batch_size"] >= 1 and settings["cpu_threads"] >= 1
    )  # as mode=sample records (before: absent)


def test_superres_consistency_makes_outputs_downsample_to_their_input(sr_ckpt, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):  # mid-grey pictures: the consistent outputs need no values outside [0, 255]
        Image.fromarray(rng.integers(70, 190, (4, 4), dtype=np.uint8)).save(inputs / f"in{i}.png")
    low = torch.stack([to_tensor(Image.open(inputs / f"in{i}.png")) for i in range(2)]) * 2 - 1

    def mismatch(*overrides: str) -> tuple[float, dict]:
        out = tmp_path / f"out{len(overrides)}"
        args = [f"ckpt={sr_ckpt}", "mode=superres", f"image={inputs}", "n=2", "sampler.steps=4", f"out={out}"]
        sample(compose_config("sample", [*args, *overrides], tmp_path))
        arr = torch.from_numpy(np.load(out / "samples.npz")["images"]).permute(0, 3, 1, 2).float() / 127.5 - 1
        error = float((downsample(arr, 2) - low.repeat_interleave(2, 0)).abs().max())
        return error, json.loads((out / "settings.json").read_text())

    plain, settings = mismatch()
    assert plain > 0.1 and settings["consistency"] is False  # a 4-step net ignores most of its input
    projected, settings = mismatch("superres.consistency=true")
    assert projected < 0.01 and settings["consistency"] is True  # up to the PNG's 8-bit rounding


def test_superres_results_go_to_the_project_outputs_like_every_mode(sr_ckpt, tmp_path, monkeypatch):
    inputs = write_pngs(tmp_path / "in", [4])
    monkeypatch.chdir((tmp_path / "elsewhere").mkdir() or tmp_path / "elsewhere")
    args = [f"ckpt={sr_ckpt}", "mode=superres", f"image={inputs}", "n=1", "sampler.steps=2"]
    out = sample(compose_config("sample", [*args, f"paths.root_dir={tmp_path / 'project'}"], tmp_path))
    assert out.parent.parent == tmp_path / "project" / "outputs" / "superres" and (out / "grid.png").is_file()
    assert not (tmp_path / "elsewhere" / "outputs").exists()


def test_load_super_resolves_as_sample_py_does(sr_ckpt, tmp_path):
    inputs = write_pngs(tmp_path / "in", [4, 4])
    out = tmp_path / "cli"
    args = [f"ckpt={sr_ckpt}", "mode=superres", f"image={inputs}", "n=2", "sampler.steps=3", "sampler.eta=1"]
    sample(compose_config("sample", [*args, "superres.consistency=true", f"out={out}"], tmp_path))
    expected = np.load(out / "samples.npz")["images"]
    pipe = difflab.load(sr_ckpt)
    got = pipe.sample(2, mode="superres", image=inputs, steps=3, eta=1.0, consistency=True, batch_size=3)
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="is a super-resolution model: use mode=superres image="):
        pipe.sample(2)


def test_load_autoguides_a_superres_model_as_sample_py_does(sr_ckpt, tmp_path):
    # Before, pipe.sample refused guide= with "guidance=2.0 has no effect with mode=superres: … (or guide with a
    # weaker model: guide=)": the guide was named after the checks that read it.
    weaker = with_other_weights(sr_ckpt, tmp_path / "weaker.ckpt")
    inputs = write_pngs(tmp_path / "in", [4, 4])
    out = tmp_path / "cli"
    args = [
        f"ckpt={sr_ckpt}",
        "mode=superres",
        f"image={inputs}",
        "n=2",
        "sampler.steps=3",
        f"guide={weaker}",
    ]
    sample(compose_config("sample", [*args, "guidance=2", f"out={out}"], tmp_path))
    expected = np.load(out / "samples.npz")["images"]
    got = difflab.load(sr_ckpt).sample(2, mode="superres", image=inputs, steps=3, guide=weaker, guidance=2.0)
    np.testing.assert_array_equal(got, expected)


def test_evaluate_starts_on_a_huge_n_of_a_superres_checkpoint(sr_ckpt, tmp_path, monkeypatch):
    """evaluate.py streams its samples, so n=10**9 starts generating from the held-out images' low-res versions
    (sample i from image i, cycled), as it does for an unconditional checkpoint. Before, it ran out of memory
    building all n inputs first."""
    small = ["metrics.num_reference=40", "metrics.kid_subset_size=10", "metrics.prc=false"]
    overrides = [f"ckpt={sr_ckpt}", f"n={10**9}", "batch_size=3", "sampler.steps=2", *small]
    overrides += [f"metrics.cache_dir={tmp_path / 'cache'}", f"out={tmp_path / 'r.json'}"]
    images, seen = evaluate_first_batch(monkeypatch, overrides, tmp_path)
    assert images.shape == (3, 1, 8, 8)
    dm = ImageDataModule("digits", image_size=8, batch_size=16, condition="superres", sr_factor=2)
    val = torch.stack([dm.dataset_for("val")[i][0] for i in range(3)])
    torch.testing.assert_close(seen[0]["low_res"], upsample(downsample(val, 2), 8))


def test_evaluate_says_when_n_super_resolves_each_held_out_image_more_than_once(sr_ckpt, tmp_path, caplog):
    """n=100 on the 90 held-out digits: ten of them are super-resolved twice; the report and the log say so."""
    small = ["metrics.num_reference=40", "metrics.kid_subset_size=10", "metrics.prc=false", "sampler.steps=1"]
    small += [f"metrics.cache_dir={tmp_path / 'cache'}"]
    reports = {}
    for n in (20, 100):
        cfg = compose_config(
            "eval", [f"ckpt={sr_ckpt}", f"n={n}", *small, f"out={tmp_path / f'{n}.json'}"], tmp_path
        )
        with caplog.at_level("INFO", logger="difflab"):
            reports[n] = evaluate(cfg)["generated"]["inputs"]
    assert reports[20] == "the low-res versions of the first 20 held-out images, one sample each"
    cycled = "the low-res versions of the 90 held-out images, each super-resolved 1-2 times (sample i from image i % 90)"
    assert reports[100] == cycled
    assert f"n=100 is more than the held-out split: {cycled}" in caplog.text


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["mode=superres"], "mode=superres needs image="),
        (["mode=superres", "image=IMG", "guidance=3"], "guidance=3 has no effect with mode=superres"),
        (["mode=superres", "image=IMG", "labels=[1]"], "mode=superres conditions on image= only"),
        # Before, a prompt or a negative prompt was taken and ignored without a word.
        (
            ["mode=superres", "image=IMG", "prompt=a cat"],
            r"^prompt=a cat given, but mode=superres conditions on",
        ),
        (["mode=superres", "image=IMG", "negative_prompt=x"], r"^negative_prompt=x given, but mode=superres"),
        ([], "is a super-resolution model: use mode=superres image="),
        (["mode=superres", "image=IMG", "superres.consistency=maybe"], "consistency='maybe' must be true or"),
    ],
)
def test_bad_superres_requests_are_one_line(sr_ckpt, tmp_path, overrides, fragment):
    inputs = write_pngs(tmp_path / "in", [4])
    overrides = [o.replace("IMG", str(inputs)) for o in overrides]
    cfg = compose_config("sample", [f"ckpt={sr_ckpt}", "n=1", f"out={tmp_path / 'o'}", *overrides], tmp_path)
    with pytest.raises(ValueError, match=fragment) as error:
        sample(cfg)
    assert "\n" not in str(error.value) and not (tmp_path / "o").exists()


def test_superres_on_an_unconditional_checkpoint_is_one_line(tiny_ckpt, tmp_path):
    inputs = write_pngs(tmp_path / "in", [4])
    cfg = compose_config("sample", [f"ckpt={tiny_ckpt}", "mode=superres", f"image={inputs}"], tmp_path)
    # Before: "… was trained with data.condition=None", a value no config has.
    with pytest.raises(
        ValueError, match=r"needs a super-resolution checkpoint .* holds an unconditional model$"
    ):
        sample(cfg)
