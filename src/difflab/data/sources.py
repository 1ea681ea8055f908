"""Dataset names -> raw (PIL image, label) train and held-out splits, with root checks: scikit-learn's bundled
digits, MNIST, Fashion-MNIST and CIFAR-10 through torchvision, and image folders (pre-split or split here by a
deterministic random hold-out)."""

from __future__ import annotations

import hashlib
import os
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import datasets

from difflab.data.errors import DataError
from difflab.data.folder import ImageFileDataset, find_classes, holds_images, scan_images, warn_skipped
from difflab.io.decode import IMAGE_SUFFIXES
from difflab.io.image_tree import image_paths

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "folder")

# Folder names that mark a pre-split tree, in order of preference for the held-out split: "val" is the
# split meant for watching training; "test" is used when it is the only one (as in CIFAR-10's JPEG layout).
TRAIN_DIR = "train"
HELDOUT_DIRS = ("val", "validation", "valid", "test")  # beside root/train, the first present is held out


@dataclass(frozen=True)
class RawSplits:
    """Un-transformed train and held-out datasets of (PIL image, label), the class count (None: none), and
    whether the images are in memory (no file to decode: worth transforming once and keeping as tensors)."""

    train: Dataset
    val: Dataset
    num_classes: int | None
    in_memory: bool = False
    # A folder tree's class folders holding images, in label order (None: a source that names none on disk).
    class_folders: list[str] | None = None


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


def open_splits(
    dataset: str,
    root: str | Path | None,
    val_fraction: float,
    split_seed: int,
    labelled: bool = True,
    by_name: bool = True,
) -> RawSplits:
    """Open the train and held-out splits of a named source (see ImageDataModule for each source's rules);
    `labelled`: the run uses the labels (a folder's held-out labels must then be the train folder's); `by_name`: a
    folder's held-out images are chosen by file name (data.held_out_by=name), else by order."""
    check_dataset_name(dataset)
    if dataset == "digits":
        digits = DigitsDataset()
        train_idx, val_idx = holdout_split(len(digits), val_fraction, split_seed, source="digits")
        return RawSplits(Subset(digits, train_idx), Subset(digits, val_idx), DigitsDataset.num_classes, True)
    path = resolve_root(dataset, root)
    if dataset == "folder":
        return open_folder(path, val_fraction, split_seed, labelled, by_name)
    if dataset == "cifar10" and not (path / "cifar-10-batches-py").is_dir():
        if (path / TRAIN_DIR).is_dir():
            return open_folder(path, val_fraction, split_seed, labelled, by_name)
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
    """(train dir, held-out dir or None): root/train with root/val or root/test when present, else root. The
    names in any case (Train/, Test/): before, on Linux those became two classes named Train and Test. Without a
    held-out folder, a train/ beside other folders of images is a class folder like them."""
    train = _folder_named(root, TRAIN_DIR)
    if train is None:
        return root, None
    held_out = next((found for name in HELDOUT_DIRS if (found := _folder_named(root, name))), None)
    others = sorted(  # folders of images beside train/ (not __MACOSX/ or notes/)
        p.name
        for p in root.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and p.name.lower() not in (TRAIN_DIR, *HELDOUT_DIRS)
        and holds_images(p)
    )
    named = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
    # Class folders, one of them named train (a CIFAR-100 class): before, the only one read.
    if others and held_out is None:
        _say_once(
            f"{root} holds {train.name}/ beside other folders of images ({named}): read as class folders, "
            f"{train.name}/ one of them; a tree split in advance holds train/ and val/ (or test/)"
        )
        return root, None
    if others:
        _say_once(
            f"{root} is split in advance ({train.name}/, {held_out.name}/): its other folders of images ({named}) "
            "are not read"
        )
    return train, held_out


def _folder_named(root: Path, name: str) -> Path | None:
    """root/<name>, or the one folder of root whose name is <name> in another case; None when there is none."""
    if (root / name).is_dir():
        return root / name
    found = (
        sorted(p for p in root.iterdir() if p.name.lower() == name and p.is_dir()) if root.is_dir() else []
    )
    return found[0] if found else None


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    """Warn once a process: a run opens its folder to check it, then to train on it. Named at the line that
    called the warning function's caller (open_folder's caller), as each warning of a tree is."""
    if message not in _SAID:
        _SAID.add(message)
        warnings.warn(message, UserWarning, stacklevel=4)


def without_aliases(train_dir: Path, classes: list[str]) -> tuple[list[str], dict[str, str]]:
    """One class per real folder: a class folder linked under a second name (puppy -> dog) is read once, as the
    class of the real folder's name (the first name, sorted, when every name is a link); the other names are said
    in one warning. Before, each name counted the other as another class's folder, and both were dropped.
    Returns the classes kept and {second name: the class it stands for}."""
    names_of: dict[str, list[str]] = {}
    for name in classes:
        names_of.setdefault(os.path.realpath(train_dir / name), []).append(name)
    kept_of = {
        real: next((name for name in names if not (train_dir / name).is_symlink()), names[0])
        for real, names in names_of.items()
    }
    aliases = {
        name: kept_of[real] for real, names in names_of.items() for name in names if name != kept_of[real]
    }
    if aliases:
        _say_once(
            f"{train_dir}: class folder(s) linked under another name are read once, as the class of the folder "
            f"they name: {', '.join(f'{alias} -> {kept}' for alias, kept in aliases.items())}"
        )
    return sorted(kept_of.values()), aliases


def without_empty_classes(
    train_dir: Path, classes: list[str], samples: list[tuple[str, int]], val_dir: Path | None = None
) -> tuple[list[str], dict[str, int], list[tuple[str, int]]]:
    """Class folders holding no image are not classes (an empty folder, an unzipped archive's __MACOSX/): before,
    each became a label the model learned nothing for and sample.py accepted. Named in one warning, with the
    held-out images in `val_dir` that are left out with them (before, dropped from validation without a word)."""
    present = sorted({label for _, label in samples})
    if len(present) == len(classes):
        return classes, {name: index for index, name in enumerate(classes)}, samples
    empty = [name for index, name in enumerate(classes) if index not in present]
    message = f"{train_dir}: folder(s) with no image are not classes: {', '.join(empty)}"
    # Counted by file name, not opened: what a held-out folder of these would have given.
    held_out = {name: sum(1 for _ in image_paths(val_dir / name)) for name in empty} if val_dir else {}
    if sum(held_out.values()):
        counts = ", ".join(f"{val_dir / name} ({count})" for name, count in held_out.items() if count)
        message += (
            f"; their {sum(held_out.values())} held-out image(s) are left out of validation too: {counts}"
        )
    _say_once(message)
    new_index = {old: new for new, old in enumerate(present)}
    kept = [classes[index] for index in present]
    return (
        kept,
        {name: index for index, name in enumerate(kept)},
        [(p, new_index[label]) for p, label in samples],
    )


def open_folder(
    root: Path, val_fraction: float, split_seed: int, labelled: bool = True, by_name: bool = True
) -> RawSplits:
    """Scan an image tree into train and held-out splits (pre-split folders, else a seeded random split). Held-out
    labels that cannot be the train folder's are an error when the run uses labels (`labelled`); otherwise both
    splits are read as plain images (before, an unconditional run on train/<class>/ beside a flat test/ was
    refused over labels it never reads)."""
    train_dir, val_dir = split_dirs(root)
    classes = find_classes(train_dir)
    if val_dir is not None and (mismatch := heldout_layout_mismatch(val_dir, train_dir, classes)):
        if labelled:
            raise DataError(mismatch)
        classes = None
    aliases: dict[str, str] = {}
    if classes is not None:
        classes, aliases = without_aliases(train_dir, classes)
    class_to_idx = None if classes is None else {name: index for index, name in enumerate(classes)}
    train_samples, skipped = scan_images(train_dir, class_to_idx)
    if not train_samples:
        raise DataError(no_images_message(train_dir, skipped))
    if classes is not None:
        classes, class_to_idx, train_samples = without_empty_classes(
            train_dir, classes, train_samples, val_dir
        )
    val_samples: list[tuple[str, int]] = []
    if val_dir is not None:
        # A held-out folder under a train class's second name holds that class's images (before, left out).
        held_out_names = class_to_idx and {
            **{alias: class_to_idx[kept] for alias, kept in aliases.items() if kept in class_to_idx},
            **class_to_idx,
        }
        val_samples, val_skipped = scan_images(val_dir, held_out_names)
        if not val_samples:
            raise DataError(no_images_message(val_dir, val_skipped))
        skipped += val_skipped
    warn_skipped(skipped)  # one warning for the whole tree, however many folders were scanned
    num_classes = None if classes is None else len(classes)
    if val_dir is not None:
        return RawSplits(
            ImageFileDataset(train_samples), ImageFileDataset(val_samples), num_classes, class_folders=classes
        )
    names = [Path(os.path.relpath(path, root)).as_posix() for path, _ in train_samples] if by_name else None
    train_idx, val_idx = holdout_split(len(train_samples), val_fraction, split_seed, str(root), names)
    if classes is not None:
        warn_if_a_class_is_only_held_out(root, classes, {train_samples[i][1] for i in train_idx}, split_seed)
    return RawSplits(
        ImageFileDataset([train_samples[i] for i in train_idx]),
        ImageFileDataset([train_samples[i] for i in val_idx]),
        num_classes,
        class_folders=classes,
    )


def warn_if_a_class_is_only_held_out(
    root: Path, classes: list[str], trained: set[int], split_seed: int
) -> None:
    """A class whose every image the random split held out for validation is one the model never learns, though
    sample.py takes its label: named in one warning (once a process, as the other warnings of a tree)."""
    missing = [name for index, name in enumerate(classes) if index not in trained]
    message = (
        f"class(es) {', '.join(missing)} of {root} have no training image: the random split held all their images "
        f"out for validation (data.split_seed={split_seed}), so the model never learns them; add images, or try "
        "another data.split_seed"
    )
    if missing:
        _say_once(message)


def heldout_layout_mismatch(val_dir: Path, train_dir: Path, classes: list[str] | None) -> str | None:
    """What keeps the held-out folder's labels from being the train folder's (images outside class folders,
    unknown classes); None when it is organised like it, or when train is unlabelled (every image under val_dir
    is then read with label -1, whatever its layout)."""
    if classes is None:
        return None
    val_classes = find_classes(val_dir)
    if val_classes is None:
        return (
            f"{train_dir} is organised in class folders but {val_dir} holds images outside them: sort them into "
            "the same class folders (an unconditional run reads them as they are)"
        )
    unknown = sorted(set(val_classes) - set(classes))
    if unknown:
        return f"class folder(s) {', '.join(unknown)} in {val_dir} do not exist in {train_dir}"
    return None


def no_images_message(directory: Path, skipped: list[str]) -> str:
    """One-line error for a directory that yielded no readable image."""
    if skipped:
        return (
            f"no readable images in {directory}: all {len(skipped)} image file(s) failed to open "
            f"(first: {skipped[0]})"
        )
    extensions = " ".join(IMAGE_SUFFIXES)
    hidden = sorted(
        entry.name
        for entry in (directory.iterdir() if directory.is_dir() else [])
        if entry.name.startswith(".") and entry.is_dir() and next(image_paths(entry), None) is not None
    )
    # Before, a folder whose pictures lay only in .thumbs/ gave no hint why they were not read.
    skipped_hidden = f"; hidden folders are skipped, and {', '.join(hidden)} holds some" if hidden else ""
    return f"no readable images in {directory} (looked recursively for {extensions}{skipped_hidden})"


class DigitsDataset(Dataset):
    """The 1,797 digits of ``sklearn.datasets.load_digits`` as 8x8 PIL "L" images with labels 0-9."""

    num_classes = 10

    def __init__(self) -> None:
        # Imported here: scikit-learn is slow to import and only this source needs it.
        from sklearn.datasets import load_digits

        bunch = load_digits()
        # Pixel values are ink counts 0-16; scaling by 255/16 gives the 8-bit range the transforms expect.
        self.images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
        self.labels = bunch.target.astype(np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), int(self.labels[index])


def holdout_split(
    n: int, val_fraction: float, seed: int, source: str, names: list[str] | None = None
) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into sorted (train, val) index lists; val holds ``round(n * val_fraction)``, and at
    least one image when ``val_fraction`` > 0 and there are two or more (so a tiny folder still trains).
    With `names` (a folder's files, as paths under its root) the held-out ones are those first in an order of
    each name's hash with the seed: an image added or removed moves at most one other across the split (by a
    permutation of their count, 4 of 10 held-out images changed, and a resumed run validated on trained ones)."""
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = max(1, n_val)
    if n_val < 1 and n < 2:  # a larger val_fraction would leave no image to train on
        raise DataError(
            f"validation split of {source} is empty: it holds {n} image{'' if n == 1 else 's'}, and a run needs "
            "at least 2 (one is held out for validation): add images"
        )
    if n_val < 1:
        why = "holds out no image" if val_fraction == 0 else f"× {n} images rounds to 0"
        raise DataError(
            f"validation split of {source} is empty: data.val_fraction={val_fraction} {why}, and a run validates "
            "on held-out images (its val/loss and scores): raise data.val_fraction"
        )
    if n_val >= n:
        raise DataError(
            f"training split of {source} is empty: val_fraction={val_fraction} holds out all {n} images"
        )
    if names is not None:
        # A name hashed in one Unicode form (a folder copied through macOS writes é as e + ◌́) and by its bytes
        # (os.fsencode: a name that is not UTF-8 stopped the run) keeps its side of the split.
        keys = [os.fsencode(f"{seed}/{unicodedata.normalize('NFC', name)}") for name in names]
        order = sorted(range(n), key=lambda i: hashlib.sha256(keys[i]).digest())
        return sorted(order[n_val:]), sorted(order[:n_val])
    # numpy's PCG64 stream is stable across releases, so a seed names the same split everywhere.
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


# name -> (torchvision class, display name, where torchvision expects the files under root)
TORCHVISION_SOURCES: dict[str, tuple[type[datasets.VisionDataset], str, str]] = {
    "mnist": (datasets.MNIST, "MNIST", "MNIST/raw/"),
    "fashion_mnist": (datasets.FashionMNIST, "Fashion-MNIST", "FashionMNIST/raw/"),
    "cifar10": (datasets.CIFAR10, "CIFAR-10", "cifar-10-batches-py/"),
}

DOWNLOAD_HINT = "pass data.download=true or point data.root at an existing copy"


def open_torchvision(name: str, root: Path, train: bool) -> Dataset:
    """Open the train or test split of a torchvision dataset already present in ``root``."""
    cls, display, expected = TORCHVISION_SOURCES[name]
    try:
        return cls(str(root), train=train, download=False)
    except RuntimeError as error:
        # torchvision says "Dataset not found [or corrupted]. You can use download=True ..." on several lines
        # of context; replace it with one line that names the dataset, the root and the way out.
        if "not found" not in str(error).lower():
            raise
        raise FileNotFoundError(
            f"{display} files not found in {root} (expected {root / expected}); {DOWNLOAD_HINT}"
        ) from error


def download_torchvision(name: str, root: Path) -> None:
    """Download both splits of a torchvision dataset into ``root`` (a no-op when already complete)."""
    cls, display, _ = TORCHVISION_SOURCES[name]
    root.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except (RuntimeError, OSError) as error:
        # torchvision reports every mirror it tried on its own lines; keep one line, cut to a readable length.
        cause = " ".join(str(error).split())[:300] or type(error).__name__
        raise DataError(
            f"downloading {display} into {root} failed ({cause}); "
            "check the network or point data.root at an existing copy with data.download=false"
        ) from error
