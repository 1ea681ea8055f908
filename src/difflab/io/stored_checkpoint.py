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


def torch_load_reason(error: BaseException) -> str:
    """Why torch.load could not read a file, in a phrase: never torch's advice to load it with weights_only=False
    (which runs the file's code), nor its paragraph on how a file gets corrupted (helper report: both reached
    difflab's one-line messages)."""
    text = str(error).strip()
    if isinstance(error, pickle.UnpicklingError):
        found = next(
            (line.strip() for line in text.splitlines() if "GLOBAL" in line or "Unsupported" in line), ""
        )
        return "Python objects or damage the weights-only reader refuses" + (f" ({found})" if found else "")
    first = (text.splitlines() or [type(error).__name__])[0]
    # torch's first sentence says what failed; the rest, why it may have
    return first.split(". ")[0].rstrip(".")


def not_a_checkpoint(path: Path) -> NotACheckpoint:
    """The one-line error for a path that is neither a checkpoint file nor a whole sharded folder."""
    if path.is_dir():  # a sharded checkpoint cut short (a shard folder copied without its index, say)
        missing = " or ".join(name for name in (DCP_METADATA, META_FILE) if not (path / name).is_file())
        return NotACheckpoint(f"{path} is not a whole sharded checkpoint: it has no {missing}")
    if path.exists():  # a device, a pipe: "not found" would send the user looking for a typo
        return NotACheckpoint(f"{path} is not a checkpoint file")
    return NotACheckpoint(f"checkpoint not found: {path}")
