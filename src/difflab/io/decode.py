"""The one way a picture file becomes model input: which names are pictures, decoding one upright, converting
it to 1/3/4 channels and bringing it to the model's size. Training folders, evaluation image sets and the
pictures to edit all go through here, so a folder scored by evaluate.py is read exactly like the training set."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

# Picture file suffixes (lower case), for training folders and for pictures to edit or score alike.
IMAGE_SUFFIXES = (
    *(".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm"),
    *(".png", ".ppm", ".tga", ".tif", ".tiff", ".webp"),
)

MODES = {1: "L", 3: "RGB", 4: "RGBA"}

# Transparent pixels are composited onto white: RGBA pictures (icons, sprites, product shots) are drawn to
# be seen on a light page, and merely dropping alpha would expose whatever colour hides under it.
ALPHA_BACKGROUND = (255, 255, 255)

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_INT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


class UnreadableImageError(ValueError):
    """A file's pixel data cannot be decoded (corrupt, truncated, not a picture); the message names it."""


def is_image_name(name: str) -> bool:
    """True for a visible file name with a picture suffix (case-insensitive)."""
    # Dot-files are skipped: macOS "._x.jpg" resource forks carry image extensions but no image.
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def decode_image(path: str | Path) -> Image.Image:
    """The fully decoded picture, turned upright as a viewer shows it (EXIF orientation applied)."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a file can pass a header check and still be truncated or corrupt
            # A copy, rotated when the camera recorded an orientation.
            upright = ImageOps.exif_transpose(image)
    except Exception as error:  # PIL plugins raise many types on junk (OSError, SyntaxError, struct.error...)
        raise UnreadableImageError(f"could not read image {path}: {error}") from error
    problem = _range_problem(upright)
    if problem:
        raise UnreadableImageError(f"could not read image {path}: {problem}")
    return upright


def check_channels(channels: int) -> None:
    """Raise ValueError unless ``channels`` is one of the supported counts (1, 3, 4)."""
    if channels not in MODES:
        raise ValueError(f"channels must be 1 (L), 3 (RGB) or 4 (RGBA), got {channels}")


def to_channels(image: Image.Image, channels: int) -> Image.Image:
    """Convert a PIL image of any mode to L (1 channel), RGB (3) or RGBA (4)."""
    check_channels(channels)
    target = MODES[channels]
    image = to_8bit(image)
    if image.mode == target:
        return image
    if channels != 4 and (image.mode in _ALPHA_MODES or "transparency" in image.info):
        image = _composite_on_background(image)
    # PIL's RGB -> L is ITU-R 601-2 luma; L -> RGB replicates the channel; -> RGBA adds opaque alpha.
    try:
        return image.convert(target)
    except ValueError:
        # A colour space PIL turns into RGB only (LAB, HSV): before, a LAB TIFF stopped a 1-channel run.
        return image.convert("RGB").convert(target)


def _composite_on_background(image: Image.Image) -> Image.Image:
    """Flatten an image with alpha (or palette transparency) onto ALPHA_BACKGROUND, returning RGB."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _range_problem(image: Image.Image) -> str | None:
    """Why the pixel values of a deep (float or 32-bit) grayscale picture have no known scale, or None.

    Float pixels are read in [0, 1] (scikit-image's and tifffile's float convention) or in [0, 255]; 32-bit
    integers up to 65535 (16-bit data stored wide). Anything else would be clipped to black or white."""
    if image.mode not in ("F", "I"):
        return None
    values = np.asarray(image)
    if image.mode == "F" and not np.isfinite(values).all():
        return "its float pixels include NaN or infinity"
    low, high = float(values.min()), float(values.max())
    if image.mode == "F" and (low < 0 or high > 255):
        return f"its float pixels span [{low:g}, {high:g}]; floats are read in [0, 1] or [0, 255]"
    if image.mode == "I" and (low < 0 or high > 65535):
        return f"its 32-bit pixels span [{low:g}, {high:g}]; 32-bit integers are read up to 65535 (16-bit)"
    return None


def to_8bit(image: Image.Image) -> Image.Image:
    """Rescale deep grayscale to 8 bits: 16-bit integers by 1/257, floats in [0, 1] by 255. PIL's own
    convert("L") would clip 16-bit values above 255 to white and [0, 1] floats to black."""
    if image.mode == "F":
        values = np.asarray(image).astype(np.float64)
        scale = 255.0 if values.max() <= 1.0 else 1.0  # the range decode_image allowed: [0, 1] or [0, 255]
        return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8))
    if image.mode not in _INT_MODES:
        return image
    values = np.asarray(image).astype(np.float64)
    # Mode "I" also holds plain 8-bit data that was widened; only rescale when values exceed a byte.
    if image.mode != "I" or values.max() > 255:
        values = values / 257.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def cover_and_crop(
    size: tuple[int, int], target: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """For a picture of ``size`` (width, height) and a ``target`` (height, width): the size to resize it to
    so that it covers the target keeping its aspect ratio, and the centred crop box (left, top, right, bottom).

    For a square target this is torchvision's Resize(shorter side) + CenterCrop, to the pixel.
    """
    width, height = size
    out_h, out_w = target
    if out_h * width >= out_w * height:  # height decides: the picture is at least as wide as the target
        new_w, new_h = max(out_w, int(out_h * width / height)), out_h
    else:
        new_w, new_h = out_w, max(out_h, int(out_w * height / width))
    left, top = int(round((new_w - out_w) / 2.0)), int(round((new_h - out_h) / 2.0))
    return (new_w, new_h), (left, top, left + out_w, top + out_h)


def fit_to_size(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Resize to cover ``target`` (height, width) keeping the aspect ratio (bicubic; PIL always antialiases
    when shrinking), then crop the centre: never stretched, never padded."""
    resized_size, box = cover_and_crop(image.size, target)
    if resized_size != image.size:
        image = image.resize(resized_size, Image.Resampling.BICUBIC)
    return image if image.size == (target[1], target[0]) else image.crop(box)


def to_model_tensor(image: Image.Image, channels: int, target: tuple[int, int]) -> Tensor:
    """A picture as the model sees it: float32 (channels, height, width) in [-1, 1]."""
    return uint8_to_model(to_model_uint8(image, channels, target))


def to_model_uint8(image: Image.Image, channels: int, target: tuple[int, int]) -> Tensor:
    """The pixels of ``to_model_tensor`` before scaling: uint8 (channels, height, width). Every step before
    the scaling works on 8-bit images, so these bytes hold the model input exactly (a quarter of its size)."""
    fitted = fit_to_size(to_channels(image, channels), target)
    array = np.asarray(fitted, dtype=np.uint8).reshape(fitted.height, fitted.width, channels)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def uint8_to_model(pixels: Tensor) -> Tensor:
    """uint8 pixels -> float32 in [-1, 1], the last step of ``to_model_tensor``: ``x / 127.5 - 1``, elementwise
    and correctly rounded, so a batch scaled at once equals its images scaled one by one, bit for bit. In place
    on a fresh copy: a batch's two temporaries cost more than the arithmetic."""
    return pixels.to(torch.float32, copy=True).div_(127.5).sub_(1.0)
