"""PIL image -> float tensor in [-1, 1]: channel conversion, resize, centre crop (random flips are drawn per
batch by the training step, so this pipeline is deterministic)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from difflab.data.errors import DataError

MODES = {1: "L", 3: "RGB", 4: "RGBA"}

# Transparent pixels are composited onto white: RGBA datasets (icons, sprites, product shots) are drawn to
# be seen on a light page, and merely dropping alpha would expose whatever colour hides under it.
ALPHA_BACKGROUND = (255, 255, 255)

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_INT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def check_channels(channels: int) -> None:
    """Raise DataError unless ``channels`` is one of the supported counts (1, 3, 4)."""
    if channels not in MODES:
        raise DataError(f"channels must be 1 (L), 3 (RGB) or 4 (RGBA), got {channels}")


def to_channels(image: Image.Image, channels: int) -> Image.Image:
    """Convert a PIL image of any mode to L (1 channel), RGB (3) or RGBA (4)."""
    check_channels(channels)
    target = MODES[channels]
    image = _to_8bit(image)
    if image.mode == target:
        return image
    if channels != 4 and (image.mode in _ALPHA_MODES or "transparency" in image.info):
        image = _composite_on_background(image)
    # PIL's RGB -> L is ITU-R 601-2 luma; L -> RGB replicates the channel; -> RGBA adds opaque alpha.
    return image.convert(target)


def _composite_on_background(image: Image.Image) -> Image.Image:
    """Flatten an image with alpha (or palette transparency) onto ALPHA_BACKGROUND, returning RGB."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_8bit(image: Image.Image) -> Image.Image:
    """Rescale 16-bit grayscale to 8 bits; PIL's own convert("L") would clip everything above 255 to white."""
    if image.mode not in _INT_MODES:
        return image
    values = np.asarray(image).astype(np.float64)
    # Mode "I" also holds plain 8-bit data that was widened; only rescale when values exceed a byte.
    if image.mode != "I" or values.max() > 255:
        values = values / 257.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


class ToChannels:
    """Transform step wrapping :func:`to_channels` (a class, so DataLoader workers can pickle it)."""

    def __init__(self, channels: int) -> None:
        check_channels(channels)
        self.channels = channels

    def __call__(self, image: Image.Image) -> Image.Image:
        return to_channels(image, self.channels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(channels={self.channels})"


def build_transform(image_size: int, channels: int) -> v2.Compose:
    """Build the PIL -> (channels, image_size, image_size) float32 tensor in [-1, 1] pipeline."""
    if image_size < 1:
        raise DataError(f"image_size must be at least 1, got {image_size}")
    steps: list[Callable[[Any], Any]] = [
        ToChannels(channels),
        # Shorter side to image_size, then centre crop: keeps the aspect ratio and never pads.
        v2.Resize(image_size, interpolation=InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(image_size),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=[0.5] * channels, std=[0.5] * channels),  # [0, 1] -> [-1, 1]
        v2.ToPureTensor(),
    ]
    return v2.Compose(steps)


class TransformedDataset(Dataset):
    """Apply an image transform to a dataset of (PIL image, label) pairs, returning (tensor, int label)."""

    def __init__(self, base: Dataset, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        return self.transform(image), int(label)
