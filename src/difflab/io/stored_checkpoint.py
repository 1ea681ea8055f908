"""A Lightning checkpoint as stored, read as data in one call: one file through torch's weights-only unpickler,
or a folder of shards put back together (io.sharded_checkpoint). Which of the two it is is decided here, once."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from .sharded_checkpoint import DCP_METADATA, META_FILE, is_sharded_checkpoint, read_sharded_checkpoint


class NotACheckpoint(FileNotFoundError):
    """Nothing at the path, or a folder that is not a whole sharded checkpoint: the message says which."""


def load_stored(path: Path, mmap: bool = False) -> Any:
    """What torch.load gives for the checkpoint at `path` (a file or a sharded folder), on the CPU, nothing run.
    mmap=True maps a file's tensors and leaves a sharded folder's on the meta device (only the config wanted)."""
    if is_sharded_checkpoint(path):
        return read_sharded_checkpoint(path, shapes_only=mmap)
    if not path.is_file():
        raise not_a_checkpoint(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise
    except Exception:
        if not mmap:
            raise
        # Not a zip archive (a legacy or damaged file): a plain load says which, or reads the legacy one.
        return torch.load(path, map_location="cpu", weights_only=True)


def not_a_checkpoint(path: Path) -> NotACheckpoint:
    """The one-line error for a path that is neither a checkpoint file nor a whole sharded folder."""
    if path.is_dir():  # a sharded checkpoint cut short (a shard folder copied without its index, say)
        missing = " or ".join(name for name in (DCP_METADATA, META_FILE) if not (path / name).is_file())
        return NotACheckpoint(f"{path} is not a whole sharded checkpoint: it has no {missing}")
    return NotACheckpoint(f"checkpoint not found: {path}")
