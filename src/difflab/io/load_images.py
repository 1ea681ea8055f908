"""Read pictures to edit (a file or a folder) and inpainting masks into model-space tensors."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MODE_FOR_CHANNELS = {1: "L", 3: "RGB", 4: "RGBA"}


@dataclass
class LoadedImages:
    """Pictures in the model's shape with where they came from and their size on disk."""

    images: Tensor  # (N, C, H, W) in [-1, 1]
    paths: list[Path]
    sizes: list[tuple[int, int]]  # (width, height) of each file, before any resizing


def image_files(path: str | Path, what: str = "image") -> list[Path]:
    """[path] for a file; the sorted pictures (png, jpg, jpeg, bmp, webp) for a folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no {what} files ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
        return files
    raise FileNotFoundError(f"{what} not found: {path}")


def open_image(path: Path) -> Image.Image:
    """The decoded picture, with a one-line error naming the file when it is not one."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"could not read image {path}: {error}") from error


def _channels(img: Image.Image) -> int:
    """How many channels the picture really has (a palette is colour; CMYK is colour without alpha)."""
    if img.mode in ("P", "PA"):
        return 4 if img.mode == "PA" or "transparency" in img.info else 3
    return 3 if img.mode == "CMYK" else len(img.getbands())


def _size(wh: tuple[int, int]) -> str:
    return f"{wh[0]}×{wh[1]}"


def load_images(path: str | Path, shape: Sequence[int]) -> LoadedImages:
    """Pictures from a file or folder as floats in [-1, 1] of the model's (C, H, W).

    Other sizes are resized (bicubic, antialiased) and other channel counts converted (L/RGB/RGBA),
    with one warning for the whole batch naming what changed.
    """
    paths = image_files(path)
    images, sizes = _load(paths, shape, path)
    return LoadedImages(images, paths, sizes)


def load_image_files(paths: Sequence[Path], shape: Sequence[int], where: str | Path) -> Tensor:
    """The pictures in `paths` as a (N, C, H, W) float tensor in [-1, 1], converted as load_images does."""
    return _load(paths, shape, where)[0]


def _load(paths: Sequence[Path], shape: Sequence[int], where: str | Path) -> tuple[Tensor, list]:
    """Decode, convert and resize; warn once naming what changed."""
    c, h, w = (int(s) for s in shape)
    if c not in MODE_FOR_CHANNELS:
        raise ValueError(f"cannot load pictures for a model with {c} channels (1, 3 or 4 supported)")
    mode = MODE_FOR_CHANNELS[c]
    images, sizes, resized, converted = [], [], [], []
    for p in paths:
        img = open_image(p)
        sizes.append(img.size)
        if _channels(img) != c:
            converted.append(f"{p.name} {img.mode}")
        array = np.asarray(img.convert(mode), dtype=np.uint8).reshape(img.height, img.width, c)
        x = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 127.5 - 1.0
        if img.size != (w, h):
            resized.append(f"{p.name} {_size(img.size)}")
            # Bicubic overshoots at edges; clamp back to the data range.
            x = F.interpolate(x[None], size=(h, w), mode="bicubic", antialias=True, align_corners=False)
            x = x[0].clamp(-1.0, 1.0)
        images.append(x)
    changes = []
    if resized:
        changes.append(f"resized {len(resized)} to {_size((w, h))} ({_examples(resized)})")
    if converted:
        changes.append(f"converted {len(converted)} to {mode} ({_examples(converted)})")
    if changes:
        warnings.warn(
            f"pictures in {where} do not match the model's {c}×{h}×{w} input: {'; '.join(changes)}",
            stacklevel=2,
        )
    return torch.stack(images), sizes


def _examples(items: list[str], limit: int = 3) -> str:
    return ", ".join(items[:limit]) + (f", … {len(items) - limit} more" if len(items) > limit else "")


def _read_mask(path: Path) -> Tensor:
    """A (H, W) bool tensor, True where the mask is white (> 127 in grayscale): the pixels to generate."""
    generate = torch.from_numpy(np.asarray(open_image(path).convert("L")) > 127)
    if not bool(generate.any()):
        raise ValueError(f"mask {path} has no pixels to generate (no white pixels)")
    return generate


def _fit_mask(generate: Tensor, mask_path: Path, image_path: Path, image_size: tuple[int, int], hw) -> Tensor:
    """Check the mask against its picture's size on disk and bring it to the model's (1, H, W) as 0/1."""
    mask_size = (generate.shape[1], generate.shape[0])
    if mask_size != tuple(image_size):
        raise ValueError(
            f"mask {mask_path} is {_size(mask_size)} but the image {image_path} is {_size(image_size)}"
        )
    m = generate.float()[None]
    if tuple(m.shape[1:]) != tuple(hw):
        # Resized like its picture; any model pixel touched by white is generated (never keep a hole pixel).
        m = (F.interpolate(m[None], size=tuple(hw), mode="area")[0] > 0).float()
    return m


def load_masks(path: str | Path, images: LoadedImages) -> Tensor:
    """Masks for `images` as a (1 or N, 1, H, W) tensor of 0/1 (1 = generate) in the model's size.

    A file is one mask for every picture; a folder holds one mask per picture, with the same file name
    (any picture suffix). Each mask must be the size of its picture on disk.
    """
    path = Path(path)
    hw = tuple(images.images.shape[-2:])
    if path.is_dir():
        by_stem = {p.stem: p for p in image_files(path, "mask")}
        masks = []
        for image_path, image_size in zip(images.paths, images.sizes, strict=True):
            mask_path = by_stem.get(image_path.stem)
            if mask_path is None:
                raise FileNotFoundError(
                    f"no mask for {image_path.name} in {path} (masks need the pictures' names)"
                )
            masks.append(_fit_mask(_read_mask(mask_path), mask_path, image_path, image_size, hw))
        return torch.stack(masks)
    if not path.is_file():
        raise FileNotFoundError(f"mask not found: {path}")
    generate = _read_mask(path)
    fitted = [_fit_mask(generate, path, p, s, hw) for p, s in zip(images.paths, images.sizes, strict=True)]
    return fitted[0][None]
