"""evaluate.py: a checkpoint's samples or a folder of images scored against a dataset, reported as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_TRAIN, compose_config, run_cli

from difflab.data import ImageDataModule
from difflab.data.batches import uint8_batches
from difflab.io.images import save_samples
from difflab.run.evaluate import evaluate
from difflab.run.train import train

# Small sets keep Lite0 (224 px on a CPU) to seconds; the numbers are not meaningful, the plumbing is.
SMALL = [
    "metrics.num_reference=40",
    "metrics.kid_subset_size=10",
    "metrics.kid_subsets=10",
    "sampler.steps=2",
]


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    train(compose_config("train", [*FAST_TRAIN, "trainer.max_steps=2"], run))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def digits_val_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits held-out split written as sample.py would write samples: images/*.png + samples.npz."""
    out = tmp_path_factory.mktemp("digits_val")
    data = ImageDataModule("digits", image_size=8, channels=1)
    images = torch.cat(list(uint8_batches(data.dataset_for("val"), limit=40))).float() / 127.5 - 1
    save_samples(images, out)
    return out


def run_eval(tmp_path: Path, *overrides: str) -> dict:
    cfg = compose_config(
        "eval", [*SMALL, f"metrics.cache_dir={tmp_path / 'cache'}", *overrides], tmp_path / "run"
    )
    return evaluate(cfg)


def test_checkpoint_report_names_every_metric_and_setting(trained_ckpt: Path, tmp_path: Path) -> None:
    report = run_eval(
        tmp_path,
        f"ckpt={trained_ckpt}",
        "n=12",
        "sampler=dpm_solver",
        "sampler.steps=3",
        "metrics.inception_score=true",
        "metrics.isc_splits=2",
    )
    # Without out=, the report goes into the checkpoint's run folder.
    written = json.loads((trained_ckpt.parent.parent / "metrics.json").read_text())
    assert written == report
    assert set(report["metrics"]) == {
        "fd_effl0",
        "kid",
        "kid_std",
        "precision",
        "recall",
        "is_effl0",
        "is_effl0_std",
    }
    assert report["metrics"]["fd_effl0"] > 0  # a 2-step model is far from real digits
    generated = report["generated"]
    assert generated["n"] == 12 and generated["weights"] == "ema" and generated["global_step"] == 2
    assert generated["sampler"]["steps"] == 3 and "DPMSolver" in generated["sampler"]["_target_"]
    # The reference defaults to the checkpoint's dataset and its held-out split.
    assert report["reference"] | {"cache_hit": None} == report["reference"] | {
        "dataset": "digits",
        "split": "val",
        "num_images": 40,
        "image_size": 8,
        "cache_hit": None,
    }
    assert report["metric_settings"]["extractor"] == "efficientnet_lite0"


def test_reference_statistics_are_cached_between_runs(trained_ckpt: Path, tmp_path: Path) -> None:
    first = run_eval(tmp_path, f"ckpt={trained_ckpt}", "n=4", "out=" + str(tmp_path / "a.json"))
    second = run_eval(tmp_path, f"ckpt={trained_ckpt}", "n=4", "out=" + str(tmp_path / "b.json"))
    assert (first["reference"]["cache_hit"], second["reference"]["cache_hit"]) == (False, True)
    assert first["metrics"] == pytest.approx(second["metrics"])  # same seed, same samples, same reference


def test_images_identical_to_the_reference_score_zero(digits_val_folder: Path, tmp_path: Path) -> None:
    """A folder holding exactly the reference images: FD ≈ 0, precision = recall = 1 — for PNGs,
    sample.py's output folder and its .npz alike."""
    for i, images in enumerate(
        [digits_val_folder / "images", digits_val_folder, digits_val_folder / "samples.npz"]
    ):
        report = run_eval(tmp_path, f"images={images}", "data=digits", f"out={tmp_path / f'{i}.json'}")
        assert report["generated"]["n"] == 40
        assert report["metrics"]["fd_effl0"] == pytest.approx(0, abs=1e-3)
        assert report["metrics"]["precision"] == report["metrics"]["recall"] == 1.0


def test_noisier_images_score_worse(digits_val_folder: Path, tmp_path: Path) -> None:
    clean = np.load(digits_val_folder / "samples.npz")["images"]
    rng = np.random.default_rng(0)
    fds = []
    for sigma in (20, 60):
        noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).astype(np.uint8)
        np.savez(tmp_path / f"noisy{sigma}.npz", images=noisy)
        report = run_eval(
            tmp_path,
            f"images={tmp_path / f'noisy{sigma}.npz'}",
            "data=digits",
            f"out={tmp_path / f'{sigma}.json'}",
        )
        fds.append(report["metrics"]["fd_effl0"])
    assert 1 < fds[0] < fds[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give exactly one of ckpt=<checkpoint> (generate and score) or images="),
        (("images=somewhere",), "images=… needs the dataset to compare against: add data=<name>"),
        (("images=nowhere", "data=digits"), "generated image not found: nowhere"),
        (("ckpt=missing.ckpt",), "checkpoint not found: missing.ckpt"),
        (("images=x", "data=digits", "metrics.extractor=vgg"), "unknown feature extractor 'vgg'"),
        (("images=x", "data=digits", "metrics.reference_split=test"), "metrics.reference_split='test'"),
    ],
)
def test_bad_input_is_named(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        run_eval(tmp_path, *args, f"out={tmp_path / 'report.json'}")
    assert str(error.value).startswith(message)
    assert not (tmp_path / "report.json").exists()


def test_existing_report_is_refused_and_kept(trained_ckpt: Path, tmp_path: Path) -> None:
    report = tmp_path / "metrics.json"
    report.write_text("{}")
    result = run_cli(
        "evaluate.py", *SMALL, f"ckpt={trained_ckpt}", f"out={report}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {report} already exists; choose another out= (results are never overwritten)"
    )
    assert report.read_text() == "{}"


def test_data_that_disagrees_with_the_checkpoint_is_named(trained_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="makes 1-channel 8px images but data= gives 1-channel 16px"):
        run_eval(tmp_path, f"ckpt={trained_ckpt}", "data=digits", "data.image_size=16")


def test_guidance_without_a_checkpoint_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    """evaluate.py's settings are read and checked in one place, before the report's folder is made or the
    feature network is loaded."""
    reports = tmp_path / "reports"
    with pytest.raises(ValueError, match=r"^guidance=2 needs ckpt=<a conditional checkpoint>, not images="):
        run_eval(tmp_path, "images=x", "data=digits", "guidance=2", f"out={reports / 'report.json'}")
    assert not reports.exists()
