"""A dataset split as uint8 image batches: what feature extractors and the statistics cache consume."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from difflab.io.write_images import to_uint8


def uint8_batches(
    dataset: Dataset, batch_size: int = 256, limit: int | None = None, num_workers: int = 0
) -> Iterator[torch.Tensor]:
    """Yield the dataset's images (values in [-1, 1]) as uint8 (N, C, H, W) batches, in order.

    limit takes the first `limit` images only; labels are dropped.
    """
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))  # type: ignore[arg-type]
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in loader:
        images = batch[0] if isinstance(batch, list | tuple) else batch
        yield to_uint8(images)


def labelled_uint8_batches(
    dataset: Dataset, batch_size: int = 256, limit: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images (N, C, H, W), int64 labels (N,)) of a labelled dataset.

    limit takes that many images spread evenly over the split rather than the first ones: a folder source
    lists its classes one after another, so its first images are all of one class.
    """
    size = len(dataset)  # type: ignore[arg-type]
    if limit is not None and limit < size:
        dataset = Subset(dataset, [i * size // limit for i in range(limit)])  # type: ignore[arg-type]
    for images, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        yield to_uint8(images), torch.as_tensor(labels, dtype=torch.long)
