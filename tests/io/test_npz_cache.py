"""The on-disk caches (reference statistics, conditioning classifiers, text embeddings) are written the way every
difflab file is (io/atomic.py): readable by whoever may read a checkpoint, and a full disk is one line naming the
file with nothing partial left."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from difflab.io.atomic import NoSpaceLeft
from difflab.metrics.cache import ReferenceKey, reference_statistics
from difflab.metrics.cond_classifier import ClassifierKey, conditioning_classifier
from difflab.text import TextEmbeddingCache

DIM = 8


class MeanColour:
    """A feature extractor stand-in: each image's mean and spread, repeated to DIM features."""

    name = "meancolour"
    dim = DIM

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(1).double()
        return torch.stack([flat.mean(1), flat.std(1)], 1).repeat(1, DIM // 2)


class WordCount:
    """A text encoder stand-in: one state per word."""

    version = "test-0"

    def encode(self, texts: list[str], batch_size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.ones(len(t.split()), DIM), torch.ones(DIM)) for t in texts]


def _images() -> list[torch.Tensor]:
    return list(
        torch.randint(
            0, 256, (24, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        ).split(8)
    )


def _labelled() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images, torch.arange(len(images)) % 2) for images in _images()]


def write_each_cache(folder: Path) -> None:
    reference_statistics(ReferenceKey("toy", "train", 8, MeanColour.name), _images, MeanColour(), folder)
    conditioning_classifier(
        ClassifierKey("toy", 8, MeanColour.name), _labelled, _labelled, MeanColour(), folder
    )
    TextEmbeddingCache("toy-encoder", WordCount.version, folder, loader=lambda name: WordCount()).get(
        ["a seven"]
    )


def test_cache_files_get_the_mode_of_any_new_file(tmp_path: Path):
    umask = os.umask(0o022)
    os.umask(umask)
    write_each_cache(tmp_path)
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in tmp_path.rglob("*.npz")}
    assert len(modes) == 3
    assert set(modes.values()) == {oct(0o666 & ~umask)}, f"cache files hidden from the group: {modes}"


def test_a_full_disk_while_caching_names_the_file_and_leaves_nothing(tmp_path: Path, monkeypatch):
    def full(file, **arrays):
        file.write(b"half an archive")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    key = ReferenceKey("toy", "train", 8, MeanColour.name)
    with pytest.raises(NoSpaceLeft, match=f"no space left on device writing {tmp_path / key.filename()}"):
        reference_statistics(key, _images, MeanColour(), tmp_path)
    cache = TextEmbeddingCache("toy-encoder", WordCount.version, tmp_path, loader=lambda name: WordCount())
    with pytest.raises(NoSpaceLeft, match="no space left on device writing .*\\.npz"):
        cache.get(["a seven"])
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
