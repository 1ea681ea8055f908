"""Whether n images fit in memory at once: sample.py and pipe.sample hold every image they make (for samples.npz,
for the array they return), so a huge n is refused in one line before anything runs or is written."""

from __future__ import annotations

import math
import os

FLOAT32_BYTES = 4  # images are made and held as float32 in [-1, 1]


def machine_memory() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_images_fit(n: int, image_shape: tuple[int, ...]) -> None:
    """A one-line error when n images of `image_shape` (C, H, W) would need more memory than the machine has."""
    memory = machine_memory()
    needed = n * math.prod(image_shape) * FLOAT32_BYTES
    if memory is None or needed <= memory:
        return
    shape = "×".join(str(size) for size in image_shape)
    raise ValueError(
        f"n={n} would need {in_units(needed)} of memory to hold its images ({shape} float32 each) at once, more "
        f"than this machine's {in_units(memory)}: ask for at most {memory // (needed // n)}"
    )


def in_units(size: int) -> str:
    """A byte count as people read it: 23.3 TiB."""
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            break
        value /= 1024
    return f"{value:.1f} {unit}"
