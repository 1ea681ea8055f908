"""PIL image -> float tensor in [-1, 1] for training: the one preprocessing of difflab.io.decode (channel
conversion, shorter side resized, centre crop), so evaluation and editing read pictures exactly alike. Random
flips are drawn per batch by the training step (random_hflip, on the device from an explicit generator), so
this pipeline is deterministic."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from difflab.io.decode import to_model_tensor


class ToModelTensor:
    """PIL image -> (channels, image_size, image_size) float32 in [-1, 1] (a class, so DataLoader workers can
    pickle it)."""

    def __init__(self, image_size: int, channels: int) -> None:
        self.image_size = image_size
        self.channels = channels

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return to_model_tensor(image, self.channels, (self.image_size, self.image_size))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.image_size}, channels={self.channels})"


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


def random_hflip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image of a (N, C, H, W) batch left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)
