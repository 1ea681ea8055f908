"""Whether n images fit where they go: in memory for pipe.sample, which returns them all at once, a huge n
refused in one line before anything runs; on disk for sample.py, which writes them batch by batch; on the device,
a batch too large for it said in one line with what to lower."""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")

FLOAT32_BYTES = 4  # images are made and held as float32 in [-1, 1]


def machine_memory() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_images_fit(n: int, image_shape: tuple[int, ...], pictures: int = 1) -> None:
    """A one-line error when n images of `image_shape` (C, H, W), for each of `pictures` pictures being edited,
    would need more memory than the machine has."""
    memory = machine_memory()
    each = math.prod(image_shape) * FLOAT32_BYTES
    needed = n * pictures * each
    if memory is None or needed <= memory:
        return
    shape = "×".join(str(size) for size in image_shape)
    asked = f"n={n}" if pictures == 1 else f"n={n} for each of {pictures} pictures ({n * pictures} images)"
    raise ValueError(
        f"{asked} would need {in_units(needed)} of memory to hold its images ({shape} float32 each) at once, more "
        f"than this machine's {in_units(memory)}: ask for at most n={memory // (each * pictures)}"
    )


def check_disk_room(folder: Path, count: int, image_shape: tuple[int, ...]) -> None:
    """A one-line error when `count` images of `image_shape` (C, H, W) cannot fit in the free space of `folder`.
    Counted: their uint8 pixels once, about the least the run writes (samples.npz holds them compressed and the
    PNGs hold them again), so a run refused here could not have finished."""
    needed = count * math.prod(image_shape)
    free = shutil.disk_usage(folder).free
    if needed > free:
        shape = "×".join(str(size) for size in image_shape)
        raise ValueError(
            f"{count} images would need about {in_units(needed)} of disk ({shape} uint8 pixels each, before "
            f"compression), more than the {in_units(free)} free in {folder}: ask for fewer or choose out= on a "
            "larger disk"
        )
    check_file_room(folder, count)


# Beside the images, sample.py's folder holds grid.png, samples.npz, settings.json and its writing marker.
FOLDER_FILES = 4


def check_file_room(folder: Path, count: int) -> None:
    """A one-line error when the disk of `folder` has fewer free file entries (inodes) than the `count` PNGs need:
    bytes alone let n=1e9 tiny images through, which would stop with a full disk millions of files in."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs (Windows): nothing to check
        return
    # A file system without a fixed inode table (btrfs, some network mounts) reports 0 of 0.
    files = count + FOLDER_FILES
    if stats.f_files == 0 or files <= stats.f_favail:
        return
    raise ValueError(
        f"{count} images would need {files} files, more than the {stats.f_favail} the disk of {folder} can still "
        "hold: ask for fewer or choose out= on another disk"
    )


def in_units(size: int) -> str:
    """A byte count as people read it: 23.3 TiB."""
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            break
        value /= 1024
    return f"{value:.1f} {unit}"


# What the other allocators raise as a plain RuntimeError when they cannot give the memory asked for.
OTHER_ALLOCATORS = ("DefaultCPUAllocator: can't allocate memory", "MPS backend out of memory")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is a device running out of memory: CUDA's torch.OutOfMemoryError, or the CPU's or Apple
    MPS's allocator failing."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(words in str(error) for words in OTHER_ALLOCATORS)


_ASKED = re.compile(r"Tried to allocate ([\d.]+ [KMGTP]?i?B)")
_FREE = re.compile(r"total capacity of ([\d.]+ [KMGTP]?i?B) of which ([\d.]+ [KMGTP]?i?B) is free")


def allocator_figures(error: BaseException) -> str:
    """What CUDA's allocator said in numbers, for a one-line error: ' (2.00 GiB more asked for, 1.23 GiB of
    79.15 GiB free)'; '' when its message holds none (the CPU's, MPS's)."""
    text = str(error)
    asked, free = _ASKED.search(text), _FREE.search(text)
    if asked is None:
        return ""
    if free is None:
        return f" ({asked.group(1)} more asked for)"
    return f" ({asked.group(1)} more asked for, {free.group(2)} of {free.group(1)} free)"


class OutOfDeviceMemory(torch.OutOfMemoryError, ValueError):
    """Generation ran out of its device's memory in batches of `batch_size`: one line from the entry points (a
    ValueError, a user's to fix), and still the torch.OutOfMemoryError a caller retrying in smaller batches
    catches. `figures`: what the allocator said in numbers (allocator_figures)."""

    def __init__(self, device: torch.device, batch_size: int, figures: str = "") -> None:
        self.device, self.batch_size, self.figures = device, batch_size, figures
        super().__init__(
            f"out of memory on {device} making batches of {batch_size}{figures}: give a smaller batch_size= "
            "(auto finds one that fits)"
        )

    def __reduce__(self) -> tuple[type, tuple[torch.device, int, str]]:  # pickled as it was made
        return type(self), (self.device, self.batch_size, self.figures)


def named_out_of_memory(made: Iterator[T], batch_size: int, device: torch.device) -> Iterator[T]:
    """`made`'s items; its device running out of memory is an OutOfDeviceMemory that says what to lower."""
    try:
        yield from made
    except RuntimeError as error:
        if isinstance(error, OutOfDeviceMemory) or not is_out_of_memory(error):
            raise
        raise OutOfDeviceMemory(device, batch_size, allocator_figures(error)) from error
