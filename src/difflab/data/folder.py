"""Image folders: find class subfolders, scan for readable images, load them lazily by path (a file that
cannot be decoded is skipped there, replaced by the next decodable one)."""

from __future__ import annotations

import os
import unicodedata
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from difflab.data.errors import DataError, UnreadableImagesWarning
from difflab.io.decode import UnreadableImageError, decode_image, is_image_name
from difflab.io.image_tree import image_paths
from difflab.listing import listed

Sample = tuple[str, int]  # (path, class index or -1)


def find_classes(root: Path) -> list[str] | None:
    """Sorted class-folder names when ``root`` holds subfolders and no images of its own, else None."""
    subdirs, has_images = [], False
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                subdirs.append(entry.name)
            elif is_image_name(entry.name):
                has_images = True
    return sorted(subdirs) if subdirs and not has_images else None


def class_folder_changes(recorded: list[str], found: list[str]) -> str | None:
    """How the class folders `found` now differ from those a model was `recorded` as trained on, in a few words
    ("gone: cat; new: kitty"); None when they are the same, in the same label order."""
    if list(recorded) == list(found):
        return None
    gone = [name for name in recorded if name not in found]
    new = [name for name in found if name not in recorded]
    if not gone and not new:
        return "the same folders in another label order"
    # A name written in another Unicode form (a folder copied through macOS) looks the same: show its code points.
    alike = {unicodedata.normalize("NFC", name) for name in gone} & {
        unicodedata.normalize("NFC", n) for n in new
    }
    if alike:
        gone = [ascii(name) if unicodedata.normalize("NFC", name) in alike else name for name in gone]
        new = [ascii(name) if unicodedata.normalize("NFC", name) in alike else name for name in new]
    parts = [
        f"{what}: {', '.join(names[:5])}{' …' if len(names) > 5 else ''}"
        for what, names in (("gone", gone), ("new", new))
        if names
    ]
    return "; ".join(parts)


def check_class_folders_kept(
    recorded: list[str] | None,
    found: list[str] | None,
    root: Path | None,
    dataset: str = "folder",
    labelled: bool = True,
) -> None:
    """Refuse data whose class folders are not the ones a model was trained on (`recorded`, in label order): a
    renamed, added or removed folder moves the later classes to other labels, so every label would silently
    mean another class; so would `labelled` data with no class folders (a torchvision source's digits). Nothing
    to compare where the model names no folders (trained on a torchvision source), or where the data has no labels
    (a flat folder: scored without conditioning accuracy)."""
    if recorded is None or (found is None and not labelled):
        return
    if found is None:
        where = f"data.root={root}" if dataset == "folder" else f"data={dataset}"
        raise DataError(
            f"{where} has no class folders, but the model was trained on class folders ({listed(recorded, 5)}): "
            "its labels would mean other classes; give the data it was trained on"
        )
    changes = class_folder_changes(recorded, found)
    if changes is not None:
        raise DataError(
            f"data.root={root} has other class folders than the model was trained on ({changes}): its labels "
            "would mean other classes; give the data it was trained on (or rename the folders back)"
        )


def loose_images(root: Path) -> list[str]:
    """The images at the top of a folder that also has class folders (subfolders holding images), sorted: what
    makes find_classes say None. A subfolder with no image (notes/, a run's output) is no class folder: before,
    it made a flat folder's images "lie beside its class folders"."""
    entries = list(os.scandir(root))
    if not any(e.is_dir() and not e.name.startswith(".") and holds_images(e.path) for e in entries):
        return []
    return sorted(
        e.name for e in entries if not e.name.startswith(".") and e.is_file() and is_image_name(e.name)
    )


def holds_images(folder: str | Path) -> bool:
    """Whether any image lies under `folder` (walked as the dataset walks it, stopping at the first)."""
    return next(image_paths(folder), None) is not None


def unreadable_reason(path: str) -> str | None:
    """Cheap scan-time check: None when PIL can identify the file and parse a non-empty size from its header,
    else why it is skipped ("" when the file is simply not a picture PIL reads)."""
    try:
        # Image.open reads only the header; pixel data is decoded later, at load time.
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        # Before, named as unreadable like junk: a user could not tell a huge photo from a broken file.
        return f"over PIL's decompression-bomb limit of {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels: downscale it"
    except Exception:  # PIL plugins raise many types (OSError, SyntaxError, struct.error, ...) on junk
        return ""
    return None if width > 0 and height > 0 else ""


def scan_images(root: Path, class_to_idx: Mapping[str, int] | None) -> tuple[list[Sample], list[str]]:
    """Walk ``root`` recursively and return (readable samples, skipped unreadable paths), both sorted.

    With ``class_to_idx`` each top-level subfolder is a class (its images, at any depth, get its index);
    without it every image under ``root`` is labelled -1. Files without an image extension are ignored.
    """
    if class_to_idx is None:
        tops = [(root, -1)]
    else:
        tops = [(root / name, index) for name, index in sorted(class_to_idx.items())]
    samples: list[Sample] = []
    skipped: list[str] = []
    walked: set[tuple[int, int]] = set()  # a folder linked into two classes is read for the first only
    # A class known from train may have no folder in val.
    tops = [(top, label) for top, label in tops if top.is_dir()]
    for top, label in tops:
        # What lies in another class's folder, linked in here, stays that class's, and a link up the tree reads
        # nothing above the class: before, cats/more -> ../dogs labelled every dog a cat and dropped the class
        # dogs, and train/cats/up -> ../.. took the held-out val/ images into training.
        outside = None if label == -1 else _outside_class(top, [other for other, _ in tops if other != top])
        for path in image_paths(top, walked, outside):
            reason = unreadable_reason(path)
            if reason is None:
                samples.append((path, label))
            else:
                skipped.append(f"{path} ({reason})" if reason else path)
    return samples, skipped


def _outside_class(top: Path, others: list[Path]) -> Callable[[str], bool]:
    """Whether a folder, by its real path, lies outside the class folder `top`: in another class's folder, or
    above `top` (a link up the tree)."""
    own = os.path.realpath(top)
    # A second name of this very folder (a link to it) is not another class's folder.
    roots = [real for real in map(os.path.realpath, others) if real != own]

    def within(real: str, folder: str) -> bool:
        return real == folder or real.startswith(folder.rstrip(os.sep) + os.sep)

    def outside(real: str) -> bool:
        return any(within(real, root) for root in roots) or (real != own and within(own, real))

    return outside


# PIL modes of single-channel pictures (with or without alpha); a palette ("P") may hold colours, so it is not one.
GRAYSCALE_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_NOTED_GRAYSCALE: set[str] = set()  # the folders already noted in this process


def note_if_grayscale(samples: list[Sample], channels: int, root: Path, look_at: int = 64) -> None:
    """Warn once when a colour model (channels=3) is to train on a folder whose pictures are all grayscale, by the
    headers of up to `look_at` of them spread over the folder: it would learn three copies of one channel."""
    if channels == 1 or not samples or str(root) in _NOTED_GRAYSCALE:
        return
    picked = samples[:: max(1, len(samples) // look_at)][:look_at]
    try:
        modes = set()
        for path, _ in picked:
            with Image.open(path) as image:
                modes.add(image.mode)
    except Exception:  # an unreadable file is named where it is decoded
        return
    if modes <= GRAYSCALE_MODES:
        _NOTED_GRAYSCALE.add(str(root))
        warnings.warn(
            f"the pictures of {root} are grayscale ({', '.join(sorted(modes))}): data.channels={channels} trains a "
            "colour model on copies of one channel; data.channels=1 learns the same from a third of the input",
            UserWarning,
            stacklevel=3,
        )


SKIPPED_NAMED = 20  # files named in the warning; a folder with thousands of broken files gets a count


_WARNED: set[tuple[str, ...]] = set()  # the skipped lists already named in this process


def warn_skipped(skipped: list[str]) -> None:
    """Emit one warning for all unreadable files skipped while scanning (none when the list is empty), once per
    process: a labelled run scans its folder twice (its classes are counted before the run is set up)."""
    if skipped and tuple(skipped) not in _WARNED:
        _WARNED.add(tuple(skipped))
        warnings.warn(
            f"skipped {len(skipped)} unreadable image file(s): {listed(skipped, SKIPPED_NAMED)}",
            UnreadableImagesWarning,
            stacklevel=2,
        )


# Files looked for, spread over a dataset, when one of its files is missing: none there means the images are gone.
LOOK_FOR_OTHERS = 8


class ImageFileDataset(Dataset):
    """Images loaded lazily from (path, label) samples, returned as (PIL image, label).

    Only headers were checked when scanning, so a file can still fail to decode here (truncated, corrupt
    pixel data). Such a file is skipped: item ``i`` is then the next decodable sample after it (wrapping
    round), so the result stays a function of the index. The first process to meet it, main or DataLoader
    worker, names it in an UnreadableImagesWarning that counts the files skipped so far; the flags live in
    shared memory, so the file is not decoded or reported again by any worker, in any epoch.
    """

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples
        # Shared with DataLoader workers (forked or spawned), so one worker's finding holds for all of them.
        self._undecodable = torch.zeros(len(samples), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        for offset in range(len(self.samples)):
            candidate = (index + offset) % len(self.samples)
            if self._undecodable[candidate]:
                continue
            path, label = self.samples[candidate]
            try:
                return decode_image(path), label
            except UnreadableImageError as error:
                if isinstance(error.__cause__, FileNotFoundError):
                    self._refuse_if_images_gone(path)
                self._skip(candidate, error)
        raise DataError(
            f"none of the {len(self.samples)} images can be decoded (first: {self.samples[0][0]})"
        )

    def _refuse_if_images_gone(self, missing: str) -> None:
        """One error when the images are gone as a whole (their folder moved, deleted or unmounted while a run read
        them): before, a warning for each file in turn until none was left. A lone file removed is skipped."""
        spread = self.samples[:: max(1, len(self.samples) // LOOK_FOR_OTHERS)][:LOOK_FOR_OTHERS]
        if any(os.path.exists(path) for path, _ in spread):
            return
        folder = os.path.dirname(missing)
        raise DataError(
            f"the images are gone since they were listed ({missing} and the others looked for; "
            f"{folder} {'no longer holds them' if os.path.isdir(folder) else 'is gone'}): were they moved, deleted "
            "or unmounted?"
        )

    def _skip(self, index: int, error: UnreadableImageError) -> None:
        """Mark an undecodable sample and say so, naming the file (once: later draws skip it silently)."""
        if self._undecodable[index]:
            return  # another worker found it at the same moment and has reported it
        self._undecodable[index] = True
        warnings.warn(
            f"{error}; skipped, its place taken by the next decodable image "
            f"({int(self._undecodable.sum())} undecodable file(s) skipped so far)",
            UnreadableImagesWarning,
            stacklevel=3,
        )
