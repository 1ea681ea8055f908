"""Dataset names -> raw (PIL image, label) train and held-out splits, with root checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset, Subset

from difflab.data.digits import DigitsDataset
from difflab.data.errors import DataError
from difflab.data.folder import ImageFileDataset, find_classes, scan_images, warn_skipped
from difflab.data.splits import holdout_split
from difflab.data.torchvision_sources import (
    DOWNLOAD_HINT,
    TORCHVISION_SOURCES,
    download_torchvision,
    open_torchvision,
)
from difflab.io.decode import IMAGE_SUFFIXES

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "folder")

# Folder names that mark a pre-split tree, in order of preference for the held-out split: "val" is the
# split meant for watching training; "test" is used when it is the only one (as in CIFAR-10's JPEG layout).
TRAIN_DIR = "train"
HELDOUT_DIRS = ("val", "test")


@dataclass(frozen=True)
class RawSplits:
    """Un-transformed train and held-out datasets of (PIL image, label), the class count (None: none), and
    whether the images are in memory (no file to decode: worth transforming once and keeping as tensors)."""

    train: Dataset
    val: Dataset
    num_classes: int | None
    in_memory: bool = False


def check_dataset_name(dataset: str) -> None:
    """Raise ValueError naming the valid choices when ``dataset`` is not one of them."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def resolve_root(dataset: str, root: str | Path | None, must_exist: bool = True) -> Path:
    """Return ``root`` as a Path, raising a one-line error when it is unset, missing or not a directory."""
    hint = f"; {DOWNLOAD_HINT}" if dataset in TORCHVISION_SOURCES else ""
    if root is None:
        raise DataError(f"dataset {dataset!r} needs data.root (a directory), but it is null{hint}")
    path = Path(root).expanduser()
    if must_exist and not path.exists():
        raise FileNotFoundError(f"data root {path} does not exist{hint}")
    if path.exists() and not path.is_dir():
        raise DataError(f"data root {path} is not a directory")
    return path


def open_splits(dataset: str, root: str | Path | None, val_fraction: float, split_seed: int) -> RawSplits:
    """Open the train and held-out splits of a named source (see ImageDataModule for each source's rules)."""
    check_dataset_name(dataset)
    if dataset == "digits":
        digits = DigitsDataset()
        train_idx, val_idx = holdout_split(len(digits), val_fraction, split_seed, source="digits")
        return RawSplits(Subset(digits, train_idx), Subset(digits, val_idx), DigitsDataset.num_classes, True)
    path = resolve_root(dataset, root)
    if dataset == "folder":
        return open_folder(path, val_fraction, split_seed)
    if dataset == "cifar10" and not (path / "cifar-10-batches-py").is_dir():
        if (path / TRAIN_DIR).is_dir():
            return open_folder(path, val_fraction, split_seed)
        raise FileNotFoundError(
            f"CIFAR-10 not found in {path} (expected cifar-10-batches-py/ or train/<class>/ image folders); "
            f"{DOWNLOAD_HINT}"
        )
    train = open_torchvision(dataset, path, train=True)
    val = open_torchvision(dataset, path, train=False)
    return RawSplits(train, val, len(train.classes), in_memory=True)  # type: ignore[attr-defined]


def download(dataset: str, root: str | Path | None) -> None:
    """Fetch a torchvision source into ``root`` unless a usable copy is already there; others need none."""
    if dataset not in TORCHVISION_SOURCES:
        return
    path = resolve_root(dataset, root, must_exist=False)
    if dataset == "cifar10" and (path / TRAIN_DIR).is_dir():
        return  # the JPEG folder layout is already present
    download_torchvision(dataset, path)


def split_dirs(root: Path) -> tuple[Path, Path | None]:
    """(train dir, held-out dir or None): root/train with root/val or root/test when present, else root."""
    if (root / TRAIN_DIR).is_dir():
        for name in HELDOUT_DIRS:
            if (root / name).is_dir():
                return root / TRAIN_DIR, root / name
        return root / TRAIN_DIR, None
    return root, None


def open_folder(root: Path, val_fraction: float, split_seed: int) -> RawSplits:
    """Scan an image tree into train and held-out splits (pre-split folders, else a seeded random split)."""
    train_dir, val_dir = split_dirs(root)
    classes = find_classes(train_dir)
    class_to_idx = None if classes is None else {name: index for index, name in enumerate(classes)}
    train_samples, skipped = scan_images(train_dir, class_to_idx)
    if not train_samples:
        raise DataError(no_images_message(train_dir, skipped))
    val_samples: list[tuple[str, int]] = []
    if val_dir is not None:
        check_heldout_classes(val_dir, train_dir, classes)
        val_samples, val_skipped = scan_images(val_dir, class_to_idx)
        if not val_samples:
            raise DataError(no_images_message(val_dir, val_skipped))
        skipped += val_skipped
    warn_skipped(skipped)  # one warning for the whole tree, however many folders were scanned
    num_classes = None if classes is None else len(classes)
    if val_dir is not None:
        return RawSplits(ImageFileDataset(train_samples), ImageFileDataset(val_samples), num_classes)
    train_idx, val_idx = holdout_split(len(train_samples), val_fraction, split_seed, source=str(root))
    return RawSplits(
        ImageFileDataset([train_samples[i] for i in train_idx]),
        ImageFileDataset([train_samples[i] for i in val_idx]),
        num_classes,
    )


def check_heldout_classes(val_dir: Path, train_dir: Path, classes: list[str] | None) -> None:
    """Require the held-out folder to be organised like the train folder, with no unknown classes."""
    if classes is None:
        return  # unlabelled train: every image under val_dir is read with label -1, whatever its layout
    val_classes = find_classes(val_dir)
    if val_classes is None:
        raise DataError(f"{train_dir} is organised in class folders but {val_dir} holds images outside them")
    unknown = sorted(set(val_classes) - set(classes))
    if unknown:
        raise DataError(f"class folder(s) {', '.join(unknown)} in {val_dir} do not exist in {train_dir}")


def no_images_message(directory: Path, skipped: list[str]) -> str:
    """One-line error for a directory that yielded no readable image."""
    if skipped:
        return (
            f"no readable images in {directory}: all {len(skipped)} image file(s) failed to open "
            f"(first: {skipped[0]})"
        )
    extensions = " ".join(IMAGE_SUFFIXES)
    return f"no readable images in {directory} (looked recursively for {extensions})"
