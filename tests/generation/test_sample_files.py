"""sample.py writes its results as they come, batch by batch (n=50000 at 256 px no longer needs 39 GB held at
once), keeps "nothing was written" when a later batch fails, and draws a grid a person can open however large n."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from PIL import Image

from difflab.generation import into_folder
from difflab.generation.grids import grid_indices
from difflab.generation.images import Generation
from difflab.io import write_images
from difflab.io.atomic import NoSpaceLeft
from difflab.run.sample import sample


def run_sample(tiny_ckpt: Path, out: Path, *overrides: str) -> Path:
    cfg = compose_config(
        "sample", [f"ckpt={tiny_ckpt}", "sampler.steps=1", f"out={out}", *overrides], out.parent
    )
    return sample(cfg)


# What sample.py and evaluate.py say when the second of three batches (n=10, batch_size=4) is not finite.
SECOND_BATCH_NAN = r"^4 of 4 samples are not finite \(NaN/inf\) \(the batch of samples 4-7 of 10\)"


def make_the_second_batch_nan(monkeypatch) -> None:
    real_batches = Generation.batches

    def second_is_nan(self, on_step=None):
        for k, (indices, images) in enumerate(real_batches(self, on_step)):
            yield indices, (images if k != 1 else torch.full_like(images, float("nan")))

    monkeypatch.setattr(Generation, "batches", second_is_nan)


@pytest.mark.parametrize("png_writers", [0, 2])
def test_each_batch_is_on_disk_before_the_one_after_next_is_made(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch, png_writers: int
) -> None:
    monkeypatch.setattr(into_folder, "png_writer_threads", lambda placement: png_writers)
    out = tmp_path / "out"
    on_disk = []
    real_batches = Generation.batches

    def watched(self, on_step=None):
        for batch in real_batches(self, on_step):
            on_disk.append(len(list((out / "images").glob("*.png"))))
            yield batch

    monkeypatch.setattr(Generation, "batches", watched)
    run_sample(tiny_ckpt, out, "n=10", "batch_size=4")
    if png_writers:  # memory holds the batch being written and the one being made, no more
        assert on_disk[0] == 0 and on_disk[1] in (0, 1, 2, 3, 4) and on_disk[2] >= 4
    else:
        assert on_disk == [0, 4, 8]
    pngs = sorted((out / "images").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(10)]
    with np.load(out / "samples.npz") as arrays:
        npz = arrays["images"]
    assert npz.shape == (10, 8, 8, 1)
    assert all(
        np.array_equal(np.asarray(Image.open(p)), image[..., 0]) for p, image in zip(pngs, npz, strict=True)
    )


def test_png_writers_write_one_batch_while_the_next_is_made(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch
) -> None:
    """The first batch's PNGs wait until the second batch has been made: written in turn, this never ends."""
    monkeypatch.setattr(into_folder, "png_writer_threads", lambda placement: 2)
    second_made = threading.Event()
    real_batches, real_save_png = Generation.batches, write_images.save_png

    def noting_the_second(self, on_step=None):
        for k, batch in enumerate(real_batches(self, on_step)):
            if k == 1:
                second_made.set()
            yield batch

    def waiting_save_png(image, path):
        if path.stem.isdigit() and int(path.stem) < 4:
            assert second_made.wait(timeout=60), "the second batch was not made while the first was written"
        real_save_png(image, path)

    monkeypatch.setattr(Generation, "batches", noting_the_second)
    monkeypatch.setattr(write_images, "save_png", waiting_save_png)
    out = run_sample(tiny_ckpt, tmp_path / "out", "n=10", "batch_size=4")
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:05d}.png" for i in range(10)]


def test_a_png_writer_that_fails_on_a_full_disk_keeps_the_whole_batches_for_a_resume(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(into_folder, "png_writer_threads", lambda placement: 2)
    real_save_png = write_images.save_png

    def failing_on_the_sixth(image, path):
        if path.stem == "00005":
            raise NoSpaceLeft(path)
        real_save_png(image, path)

    monkeypatch.setattr(write_images, "save_png", failing_on_the_sixth)
    out = tmp_path / "out"
    with pytest.raises(NoSpaceLeft, match=r"^no space left on device writing .*00005\.png"):
        run_sample(tiny_ckpt, out, "n=10", "batch_size=4")
    # What was written stays, marked unfinished (before, all of it was deleted); resume=true makes the rest, as
    # an uninterrupted run makes them.
    assert {f"{i:05d}.png" for i in range(4)} <= {p.name for p in (out / "images").iterdir()}
    monkeypatch.setattr(write_images, "save_png", real_save_png)
    run_sample(tiny_ckpt, out, "n=10", "batch_size=4", "resume=true")
    whole = run_sample(tiny_ckpt, tmp_path / "whole", "n=10", "batch_size=4")
    names = sorted(p.name for p in (whole / "images").iterdir())
    assert sorted(p.name for p in (out / "images").iterdir()) == names and len(names) == 10
    for name in names:
        assert (out / "images" / name).read_bytes() == (whole / "images" / name).read_bytes(), name


def test_a_later_batch_that_is_not_finite_leaves_nothing(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch
) -> None:
    make_the_second_batch_nan(monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=SECOND_BATCH_NAN):
        run_sample(tiny_ckpt, out, "n=10", "batch_size=4")
    assert not out.exists()  # the first batch's PNGs and the unfinished samples.npz were removed


def test_a_grid_of_many_samples_shows_32_rows_of_32(tiny_ckpt: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level("INFO", logger="difflab"):
        out = run_sample(tiny_ckpt, tmp_path / "out", "n=1100", "batch_size=550")
    assert "grid.png shows 1024 of the 1100 results (at most 32 rows of 32)" in caplog.text
    side = 32 * (8 + 2) + 2  # 8-px tiles, 2-px padding; before: 34 columns and 33 rows of them
    assert Image.open(out / "grid.png").size == (side, side)
    with np.load(out / "samples.npz") as arrays:
        assert arrays["images"].shape[0] == 1100


def test_grid_rows_keep_one_class_or_picture_each() -> None:
    assert grid_indices(100, 10) == (list(range(100)), 10)  # fits: every sample
    shown, columns = grid_indices(50_000, 5_000)  # 10 classes of 5,000: the first 32 of each
    assert columns == 32 and len(shown) == 320 and shown[32:34] == [5_000, 5_001]
    shown, columns = grid_indices(2_000, None)  # unlaid: the first 1,024
    assert (shown, columns) == (list(range(1_024)), None)
    shown, _ = grid_indices(40 * 100, 100)  # 40 inputs × 100 edits: the first 32 inputs
    assert shown[-1] == 31 * 100 + 31
    # Conditions spread in uneven blocks (sample i of block i·k // n) keep a row each, blanks (None) after them.
    assert grid_indices(10, 4, 3) == ([0, 1, 2, 3, 4, 5, 6, None, 7, 8, 9, None], 4)
    shown, columns = grid_indices(4, 1, 10)  # fewer samples than classes: a row per sample, none blank
    assert (shown, columns) == ([0, 1, 2, 3], 1)
    shown, columns = grid_indices(50_001, 5_001, 10)  # capped as before: the first 32 of each of 10 rows
    assert columns == 32 and len(shown) == 320 and shown[32] == 5_001 and None not in shown


def test_evaluate_names_the_batch_that_is_not_finite(tiny_ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    from difflab.run.evaluate import evaluate

    make_the_second_batch_nan(monkeypatch)
    report = tmp_path / "report.json"
    overrides = [f"ckpt={tiny_ckpt}", "n=10", "batch_size=4", "sampler.steps=1", f"out={report}"]
    overrides += ["metrics.num_reference=20", "metrics.prc=false", f"metrics.cache_dir={tmp_path / 'cache'}"]
    with pytest.raises(ValueError, match=SECOND_BATCH_NAN):
        evaluate(compose_config("eval", overrides, tmp_path))
    assert not report.exists()
