"""A huge n: what holds every image at once (pipe.sample) refuses it in one line naming the memory it would need,
sample.py (which writes batch by batch) the disk; evaluate.py, which only scores them, starts on it instead of failing
with a MemoryError."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import one_error_line, run_cli
from PIL import Image

import difflab
from difflab.generation import GenerationRequest, memory
from difflab.generation.images import Generation
from difflab.generation.methods import Sampling
from difflab.generation.shares import SharedGeneration

HUGE = 100_000_000_000


def test_sample_py_refuses_a_huge_n_in_one_line_naming_the_disk_it_would_need(
    tiny_ckpt: Path, tmp_path: Path
) -> None:
    # Before, a MemoryError traceback from the list of every sample's index; sample.py now writes its images batch
    # by batch, so what n cannot outgrow is the disk.
    out = tmp_path / "out"
    line = one_error_line(run_cli("sample.py", f"ckpt={tiny_ckpt}", f"n={HUGE}", f"out={out}"))
    assert line.startswith(
        f"error: {HUGE} images would need about 5.8 TiB of disk (1×8×8 uint8 pixels each, "
    )
    assert line.endswith(f"free in {out}: ask for fewer or choose out= on a larger disk")
    assert not out.exists()


def test_pipe_sample_refuses_a_huge_n_in_the_same_words(tiny_ckpt: Path) -> None:
    with pytest.raises(ValueError, match=rf"^n={HUGE} would need 23.3 TiB of memory to hold its images"):
        difflab.load(tiny_ckpt).sample(HUGE, steps=2)


def test_pipe_sample_counts_every_picture_an_edit_makes(tiny_ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    # Before, n alone was held against the memory: n=600 of 3 pictures passed a limit of 1,000 and returned 1,800.
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i in range(3):
        Image.new("L", (8, 8), 80 * i).save(pictures / f"{i}.png")
    monkeypatch.setattr(memory, "machine_memory", lambda: 1000 * 8 * 8 * memory.FLOAT32_BYTES)
    pipe = difflab.load(tiny_ckpt)
    with pytest.raises(ValueError) as refused:
        pipe.sample(600, steps=2, mode="img2img", image=str(pictures))
    assert str(refused.value).startswith(
        "n=600 for each of 3 pictures (1800 images) would need 450.0 KiB of memory"
    )
    assert str(refused.value).endswith("ask for at most n=333")
    assert pipe.sample(333, steps=2, mode="img2img", image=str(pictures), strength=0.2).shape[0] == 999


@pytest.mark.parametrize("batch_size", ["auto", 2])
def test_streamed_generation_of_a_huge_n_gives_its_first_batch(tiny_ckpt: Path, batch_size) -> None:
    """What evaluate.py does with n samples: before, a MemoryError before the first batch (evaluate.py n=1e11)."""
    pipe = difflab.load(tiny_ckpt)
    request = GenerationRequest(
        Sampling(pipe.make_sampler(steps=2), pipe.sample_shape), range(HUGE), batch_size=batch_size
    )
    indices, images = next(Generation(request, pipe.net).batches())
    assert indices == list(range(len(indices))) and images.shape[0] == len(indices) > 0
    # evaluate.py reads them through SharedGeneration, which one process or several share alike.
    shared = SharedGeneration(Generation(request, pipe.net), pipe.sample_shape)
    assert torch.equal(next(shared.batches()), images)


def test_sample_py_refuses_more_images_than_the_disk_has_files_left(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, only bytes were counted: n=1e9 tiny images passed and would have run out of inodes mid-run.
    real = os.statvfs(tmp_path)
    fields = [real.f_bsize, real.f_frsize, real.f_blocks, real.f_bfree, real.f_bavail, 1000, 5, 5]
    fields += [real.f_fsid, real.f_flag, real.f_namemax]
    monkeypatch.setattr(memory.os, "statvfs", lambda folder: os.statvfs_result(fields))
    with pytest.raises(
        ValueError, match=r"^2 images would need 6 files, more than the 5 the disk of .* can still"
    ):
        memory.check_disk_room(tmp_path, 2, (1, 8, 8))
    memory.check_disk_room(tmp_path, 1, (1, 8, 8))
