"""A datamodule's real images as the metrics take them: the reference statistics of its reference split and the
conditioning-accuracy classifier of its labelled splits, each read from the metrics cache or computed into it.
evaluate.py and the FID callback score against the same. A split is handed over as uint8 batches, and the cache
keys it by a stable name of the data config (dataset_id)."""

from __future__ import annotations

import hashlib
import logging
import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from difflab.data.datamodule import ImageDataModule
from difflab.data.worker_signals import leaving_stop_signals_to_this_process
from difflab.io.image_tree import tree_files
from difflab.io.write_images import to_uint8
from difflab.metrics.cond_classifier import LinearClassifier
from difflab.metrics.evaluator import Evaluator
from difflab.metrics.statistics import Stats

log = logging.getLogger("difflab")


def reference_statistics(
    evaluator: Evaluator, data: ImageDataModule, device: torch.device | str
) -> tuple[Stats, bool]:
    """(stats, cache hit) of the evaluator's reference split of `data` (its first num_reference images)."""
    split = data.dataset_for(evaluator.reference_split)
    size = len(split)  # type: ignore[arg-type]
    check_reference_size(size, evaluator, data)
    if evaluator.num_reference is not None and evaluator.num_reference > size:
        log.warning(
            "metrics.num_reference=%d, but the %s split of %s holds %d images: all %d are the reference",
            evaluator.num_reference,
            evaluator.reference_split,
            data.dataset,
            size,
            size,
        )
    return evaluator.reference(
        dataset_id(data),
        data.image_size,
        lambda: uint8_batches(split, limit=evaluator.num_reference),
        device,
        split_size=size,
    )


def check_reference_size(size: int, evaluator: Evaluator, data: ImageDataModule) -> None:
    """A reference split too small for a covariance, named (FD, KID and precision/recall need 2 images)."""
    size = min(size, evaluator.num_reference or size)
    if size >= 2:
        return
    raise ValueError(
        f"the reference images, the {evaluator.reference_split} split of {data.dataset}, are {size} "
        f"image{'' if size == 1 else 's'}: the scores need at least 2{larger_split(evaluator.reference_split)}"
    )


def larger_split(split: str) -> str:
    """How to score against more images than a held-out split of too few holds, as the end of an error line."""
    if split != "val":
        return ""
    # Before, the second way, which scored the same small folder, went unsaid.
    return (
        " (data.val_fraction sets how many images data.root holds out, or metrics.reference_split=train scores "
        "against the training split)"
    )


def conditioning_classifier_for(
    evaluator: Evaluator, data: ImageDataModule, device: torch.device | str
) -> tuple[LinearClassifier, bool]:
    """(classifier, cache hit): the classifier of the conditioning accuracy for this labelled data, fitted
    on its training split and scored on its held-out split (read from the cache when there)."""
    return evaluator.classifier(
        dataset_id(data),
        data.image_size,
        lambda limit: labelled_uint8_batches(data.class_dataset_for("train"), limit=limit),
        lambda: labelled_uint8_batches(data.class_dataset_for("val")),
        device,
    )


def dataset_id(data: ImageDataModule) -> str:
    """e.g. 'mnist-1ch-3f2a9c1e': the source, its channels and a hash of what decides the split contents.

    The root folder (JPEG and pickled CIFAR-10 differ by a few levels), the held-out fraction and split
    seed all go into the hash, so two configs share a cache entry only if they read the same images. For
    data=folder, so do its files: before, a picture added, removed or replaced since was scored against the
    statistics (and classifier) cached from the folder as it was, without a word.
    """
    root = str(Path(data.root).expanduser().resolve()) if data.root is not None else ""
    identity = f"{data.dataset}|{root}|{data.channels}|{data.val_fraction}|{data.split_seed}"
    if data.dataset == "folder" and root:
        identity += f"|{folder_contents(Path(root))}"
        if data.held_out_by == "name":  # another split of the same files (keys of "order" are as they were)
            identity += "|by-name"
    digest = hashlib.sha256(os.fsencode(identity)).hexdigest()[:8]
    return f"{data.dataset}-{data.channels}ch-{digest}"


def folder_contents(root: Path) -> str:
    """A hash of every file's path, size and modification time under `root` (no file is opened: a stat each),
    walked as the dataset walks it: each folder once, so links that loop back up the tree end (before, this walk
    followed them forever and the run hung before its first step)."""
    digest = hashlib.sha256()
    decomposed = False
    for name in tree_files(root, lambda _: True):
        path = Path(name)
        try:
            stat = path.stat()
        except OSError:  # a dangling link: the dataset skips it too
            continue
        named = str(path.relative_to(root))  # the split hashes names under the root
        decomposed = decomposed or unicodedata.normalize("NFC", named) != named
        # os.fsencode: a file name that is not UTF-8 is hashed by its bytes (.encode() refused it).
        digest.update(os.fsencode(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n"))
    if decomposed:
        # Names not in NFC moved across the held-out split when names came to be hashed in NFC: statistics cached
        # before were of the old split (a folder of NFC or ASCII names keeps its key).
        digest.update(b"held out by NFC names")
    return digest.hexdigest()[:16]


def uint8_batches(
    dataset: Dataset, batch_size: int = 256, limit: int | None = None, num_workers: int = 0
) -> Iterator[torch.Tensor]:
    """Yield the dataset's images (values in [-1, 1]) as uint8 (N, C, H, W) batches, in order.

    limit takes the first `limit` images only; labels are dropped.
    """
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))  # type: ignore[arg-type]
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        worker_init_fn=leaving_stop_signals_to_this_process(),
    )
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
