"""Convert model-space images ([-1, 1] floats) to uint8 and write PNGs, grids and sample.py's result files."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from .atomic import atomic_file
from .npz_stream import NpzRowWriter

log = logging.getLogger("difflab")


def to_uint8(images: Tensor) -> Tensor:
    """(N, C, H, W) floats in [-1, 1] → uint8 in [0, 255], on the CPU."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def grid_of(images: Tensor, nrow: int | None = None, padding: int = 2) -> Tensor:
    """A uint8 (C, H, W) grid of [-1, 1] images, about square unless nrow is given."""
    nrow = nrow or max(1, math.ceil(math.sqrt(images.shape[0])))
    return make_grid(to_uint8(images), nrow=nrow, padding=padding, pad_value=255)


def enlarge(grid_uint8: Tensor, min_width: int = 256) -> Tensor:
    """Nearest-neighbour upscale by an integer factor so small images (8×8 digits) are visible."""
    factor = max(1, min_width // grid_uint8.shape[-1])
    return grid_uint8.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def save_png(image_uint8: Tensor, path: str | Path) -> None:
    """Write one uint8 (C, H, W) image whole or not at all; 1 channel as grayscale."""
    array = image_uint8.permute(1, 2, 0).numpy()
    with atomic_file(path) as file:
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(file, format="PNG")


class SampleFiles:
    """sample.py's result files, written as the images come, batch by batch: numbered PNGs in images/ and
    samples.npz (uint8 NHWC, as FID tools expect); memory holds one batch, however many images are made."""

    def __init__(self, out: Path, count: int, npz_file: IO[bytes]) -> None:
        self.out, self.count, self.written = out, count, 0
        self.width = max(5, len(str(count)))  # every PNG name has as many digits, so names sort as numbers
        self._npz_file = npz_file
        self._npz: NpzRowWriter | None = None  # made at the first batch, which says the images' shape

    def add(self, images: Tensor) -> None:
        """The next images of the set, (N, C, H, W) floats in [-1, 1]."""
        uint8 = to_uint8(images)
        for i, image in enumerate(uint8, start=self.written):
            save_png(image, self.out / "images" / f"{i:0{self.width}d}.png")
        rows = uint8.permute(0, 2, 3, 1).numpy()
        if self._npz is None:
            self._npz = NpzRowWriter(self._npz_file, "images", (self.count, *rows.shape[1:]), np.uint8)
        self._npz.write(rows)
        self.written += len(uint8)

    def save_grid(self, grid_uint8: Tensor) -> None:
        save_png(grid_uint8, self.out / "grid.png")

    def abandon(self) -> None:
        """Let go of an unfinished samples.npz (its temp file is removed by the caller)."""
        if self._npz is not None:
            self._npz.abandon()

    def finish(self) -> None:
        if self._npz is None:
            raise ValueError(f"no images were written to {self.out}")
        self._npz.close()


@contextlib.contextmanager
def writing_samples(out: Path, count: int) -> Iterator[SampleFiles]:
    """SampleFiles for `count` images into the new or empty folder `out` (results.output_folder's, which removes
    what was written if the work fails); samples.npz appears only once every image is in it."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "samples.npz") as npz_file:
        files = SampleFiles(out, count, npz_file)
        try:
            yield files
        except BaseException:
            files.abandon()
            raise
        files.finish()


def log_written(count: int, written: dict[str, Path]) -> None:
    """Say where writing_samples put a result set: the PNGs, the grid and the .npz."""
    log.info(
        "wrote %d PNGs to %s, the grid %s and %s", count, written["images"], written["grid"], written["npz"]
    )
