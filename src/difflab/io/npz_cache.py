"""Arrays cached on disk as .npz: written whole or not at all (io/atomic.py), and the one "read the cached file,
else compute the value and write it" step that reference statistics, conditioning classifiers and text embeddings
share. An unreadable or outdated file is a miss and is overwritten."""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np

from .atomic import atomic_file

T = TypeVar("T")
Arrays = Mapping[str, np.ndarray]
# What reading a damaged, foreign, empty or half-written (pre-atomic) file raises.
UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def check_cache_folder(folder: Path, setting: str) -> None:
    """A one-line ValueError now, before a cache miss is computed (minutes of encoding or feature extraction),
    when `folder` cannot be made or written (read-only, no permission); `setting` names where to point it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe."):
            pass
    except OSError as error:
        raise ValueError(
            f"cannot write the cache folder {folder} ({error.strerror or error}): give a writable {setting}"
        ) from error


def write_npz(path: Path, arrays: Arrays) -> None:
    """np.savez `arrays` to `path` atomically (its folder made first); a full disk is one NoSpaceLeft line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as file:
        np.savez(file, **arrays)


def read_npz(path: Path, parse: Callable[[Arrays], T | None]) -> T | None:
    """parse(the arrays of `path`), or None when the file is absent or unreadable, or parse refuses it (None)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return parse(arrays)
    except UNREADABLE:
        return None


def cached_npz(
    path: Path,
    parse: Callable[[Arrays], T | None],
    compute: Callable[[], T],
    to_arrays: Callable[[T], Arrays],
    setting: str,
) -> tuple[T, bool]:
    """(value, hit): the value parsed from `path`, or computed and written there (`setting`: what the user
    changes to point the cache elsewhere, named when it cannot be written)."""
    value = read_npz(path, parse)
    if value is not None:
        return value, True
    check_cache_folder(path.parent, setting)
    value = compute()
    write_npz(path, to_arrays(value))
    return value, False
