"""Sources already in memory (digits, torchvision's MNIST, Fashion-MNIST and pickled CIFAR-10) served as tensors:
each image goes through the training transform once, the first time it is read, and a batch is gathered by
index in one step instead of one PIL pipeline and one collation per image per step.

Once, not at setup: the first epoch then costs what every epoch cost before (about 0.1 ms per MNIST image,
bicubic resize included: 60,000 take 6 s), spread over its batches, and a run or test that reads a few batches
of a 70,000-image source does not wait for all of them. Every later batch is a gather.

The split is kept as uint8, not float32: every step of ``to_model_tensor`` before its final scaling works on
8-bit images (a resize included: PIL resamples 8-bit images to 8 bits), so the bytes hold the model input
exactly, and ``uint8_to_model`` scales a gathered batch to the same float32 values, bit for bit, as scaling
each image alone. That is a quarter of float32's memory: CIFAR-10's 50,000 x 3 x 32 x 32 train split takes
154 MB instead of 614 MB; MNIST's 60,000 images at 32 x 32, 61 MB. Scaling a batch of 64 costs microseconds.
Loader workers each transform into their own copy, once per worker process (so once per epoch without
persistent_workers, as before): in-memory sources are best served with num_workers=0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from difflab.io.decode import to_model_uint8, uint8_to_model


class ImageTensors(Dataset):
    """A split of (PIL image, label) as uint8 pixels (N, channels, size, size) and int64 labels (N,), each
    image transformed when first read. Items are what ``TransformedDataset`` gives, ``(float32 image in
    [-1, 1], int label)``, so any consumer of a split (reference statistics, evaluation) reads it alike;
    ``batch`` gathers many at once."""

    def __init__(self, images: Dataset, image_size: int, channels: int) -> None:
        size = len(images)  # type: ignore[arg-type]
        self.images = images
        self.target = (image_size, image_size)
        self.channels = channels
        self.pixels = torch.empty((size, channels, image_size, image_size), dtype=torch.uint8)
        self.labels = torch.empty(size, dtype=torch.int64)
        self.ready = torch.zeros(size, dtype=torch.bool)

    def _transform(self, index: torch.Tensor) -> None:
        """Run the images at ``index`` that are not transformed yet through the training transform."""
        for i in index[~self.ready[index]].unique().tolist():
            image, label = self.images[i]
            self.pixels[i] = to_model_uint8(image, self.channels, self.target)
            self.labels[i] = int(label)
            self.ready[i] = True

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = range(len(self))[index]  # IndexError past the end, as iteration by index expects
        self._transform(torch.tensor([index]))
        return uint8_to_model(self.pixels[index]), int(self.labels[index])

    def batch(self, indices: Sequence[int]) -> list[torch.Tensor]:
        """[images float32 (B, C, H, W), labels int64 (B,)]: what default collation makes of the items."""
        index = torch.as_tensor(indices, dtype=torch.long)
        self._transform(index)
        return [uint8_to_model(self.pixels[index]), self.labels[index]]


class BatchedImageTensors(Dataset):
    """``ImageTensors`` for a DataLoader: DataLoader hands ``__getitems__`` a batch's indices and passes its
    result to ``collate_fn``, which must then be ``already_collated``. Kept apart from ``ImageTensors`` because
    any other loader over a split (default collation, a Subset, which forwards ``__getitems__``) expects items.
    """

    def __init__(self, tensors: ImageTensors) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.tensors[index]

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        return self.tensors.batch(indices)


def already_collated(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    """The DataLoader collate_fn for ``BatchedImageTensors``: the batch is built (a module-level function, so
    worker processes can pickle it)."""
    return batch
