"""Convert model-space images ([-1, 1] floats) to uint8 and write PNGs, grids and .npz files."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from .atomic import atomic_file

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


def save_samples(images: Tensor, out_dir: str | Path, nrow: int | None = None) -> dict[str, Path]:
    """Write samples as numbered PNGs, one grid.png and samples.npz (uint8, NHWC, as FID tools expect)."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    uint8 = to_uint8(images)
    width = max(5, len(str(len(uint8))))
    for i, img in enumerate(uint8):
        save_png(img, out / "images" / f"{i:0{width}d}.png")
    save_png(enlarge(grid_of(images, nrow)), out / "grid.png")
    with atomic_file(out / "samples.npz") as file:
        np.savez_compressed(file, images=uint8.permute(0, 2, 3, 1).numpy())
    return {"images": out / "images", "grid": out / "grid.png", "npz": out / "samples.npz"}


def log_written(count: int, written: dict[str, Path]) -> None:
    """Say where save_samples put a result set: the PNGs, the grid and the .npz."""
    log.info(
        "wrote %d PNGs to %s, the grid %s and %s", count, written["images"], written["grid"], written["npz"]
    )
