"""Convert model-space images ([-1, 1] floats) to uint8 and write PNGs, grids and sample.py's result files."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
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


def from_uint8(images: Tensor) -> Tensor:
    """uint8 images → floats in [-1, 1] that to_uint8 turns back into the same uint8 exactly."""
    return images.float() / 127.5 - 1


def read_png(path: str | Path) -> Tensor:
    """A PNG save_png wrote, as the uint8 (C, H, W) image it was written from."""
    with Image.open(path) as picture:
        array = np.array(picture)  # its own writable copy (torch warns about a read-only view)
    return torch.from_numpy(array[..., None] if array.ndim == 2 else array).permute(2, 0, 1)


def png_name(index: int, count: int) -> str:
    """The name of image `index` of `count` in images/: every name has as many digits, so names sort as numbers."""
    return f"{index:0{max(5, len(str(count)))}d}.png"


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
    samples.npz (uint8 NHWC, as FID tools expect); memory holds one batch, however many images are made. With
    `writers`, a batch's PNGs are encoded and synced by those threads while the caller makes the next batch (at
    most one batch is in flight); without, on the caller's thread."""

    def __init__(
        self,
        out: Path,
        count: int,
        npz_file: IO[bytes],
        writers: ThreadPoolExecutor | None = None,
        writer_count: int = 0,
    ) -> None:
        self.out, self.count, self.written = out, count, 0
        self._npz_file = npz_file
        self._npz: NpzRowWriter | None = None  # made at the first batch, which says the images' shape
        self._writers, self._writer_count = writers, writer_count
        self._in_flight: list[Future[None]] = []
        self._abandoned = False  # tells the writers to stop between two PNGs

    def add(self, images: Tensor, on_disk: bool = False) -> None:
        """The next images of the set, (N, C, H, W) floats in [-1, 1]; on_disk: their PNGs are there already
        (read back by read_back), only samples.npz takes them."""
        uint8 = to_uint8(images)
        self._wait_for_pngs()
        if not on_disk:
            self._write_pngs(uint8)
        rows = uint8.permute(0, 2, 3, 1).numpy()
        if self._npz is None:
            self._npz = NpzRowWriter(self._npz_file, "images", (self.count, *rows.shape[1:]), np.uint8)
        self._npz.write(rows)
        self.written += len(uint8)

    def _write_pngs(self, uint8: Tensor) -> None:
        """The batch's PNGs, on this thread or handed to the writers."""
        if self._writers is None:
            self._save_pngs(uint8, self.written)
        else:  # one chunk of the batch per thread, each written in index order
            chunks = uint8.tensor_split(self._writer_count)
            starts = np.cumsum([0, *(len(chunk) for chunk in chunks[:-1])]) + self.written
            self._in_flight = [
                self._writers.submit(self._save_pngs, chunk, int(start))
                for chunk, start in zip(chunks, starts, strict=True)
                if len(chunk)
            ]

    def _save_pngs(self, uint8: Tensor, first: int) -> None:
        for i, image in enumerate(uint8, start=first):
            if self._abandoned:
                return
            save_png(image, self.png(i))

    def png(self, index: int) -> Path:
        return self.out / "images" / png_name(index, self.count)

    def read_back(self, first: int, count: int) -> Tensor:
        """Images first … first + count - 1 from their PNGs, as the floats add() took (to_uint8 gives them back
        exactly)."""
        return from_uint8(torch.stack([self._read_kept(i) for i in range(first, first + count)]))

    def _read_kept(self, index: int) -> Tensor:
        try:
            return read_png(self.png(index))
        except (OSError, ValueError) as error:  # cut short or overwritten since: PIL's errors are OSErrors
            raise ValueError(
                f"cannot read back {self.png(index)}, an image the unfinished set kept ({error}); remove it and "
                "resume again: its batch is made anew"
            ) from error

    def _wait_for_pngs(self) -> None:
        """The PNGs handed to the writers are on disk (a writer's error, a full disk, is raised here)."""
        in_flight, self._in_flight = self._in_flight, []
        for write in in_flight:
            write.result()

    def save_grid(self, grid_uint8: Tensor) -> None:
        save_png(grid_uint8, self.out / "grid.png")

    def abandon(self) -> None:
        """Let go of an unfinished samples.npz (its temp file is removed by the caller), once no writer is still
        writing a PNG (the caller removes those too)."""
        self._abandoned = True
        for write in self._in_flight:
            write.cancel()
        futures.wait(self._in_flight)
        self._in_flight = []
        if self._npz is not None:
            self._npz.abandon()

    def finish(self) -> None:
        try:
            self._wait_for_pngs()
        except BaseException:
            self.abandon()
            raise
        if self._npz is None:
            raise ValueError(f"no images were written to {self.out}")
        self._npz.close()


@contextlib.contextmanager
def writing_samples(out: Path, count: int, png_writers: int = 0) -> Iterator[SampleFiles]:
    """SampleFiles for `count` images into the new or empty folder `out` (results.output_folder's, which removes
    what was written if the work fails); samples.npz appears only once every image is in it. png_writers: threads
    that write PNGs while the next batch is made (0: the caller writes them)."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    with (
        (
            ThreadPoolExecutor(png_writers, thread_name_prefix="png")
            if png_writers
            else contextlib.nullcontext()
        ) as writers,
        atomic_file(out / "samples.npz") as npz_file,
    ):
        files = SampleFiles(out, count, npz_file, writers, png_writers)
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
