"""A stable name for "the images of this data config", used to key cached reference statistics."""

from __future__ import annotations

import hashlib
from pathlib import Path

from difflab.data.datamodule import ImageDataModule


def dataset_id(data: ImageDataModule) -> str:
    """e.g. 'mnist-1ch-3f2a9c1e': the source, its channels and a hash of what decides the split contents.

    The root folder (JPEG and pickled CIFAR-10 differ by a few levels), the held-out fraction and split
    seed all go into the hash, so two configs share a cache entry only if they read the same images.
    """
    root = str(Path(data.root).expanduser().resolve()) if data.root is not None else ""
    identity = f"{data.dataset}|{root}|{data.channels}|{data.val_fraction}|{data.split_seed}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    return f"{data.dataset}-{data.channels}ch-{digest}"
