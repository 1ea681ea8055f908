"""A Lightning checkpoint as stored, read as data in one call: one file through torch's weights-only unpickler,
or a folder of shards put back together (io.sharded_checkpoint). Which of the two it is is decided here, once."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from .decode import is_image_name
from .diffusers_kinds import config_class
from .sharded_checkpoint import DCP_METADATA, META_FILE, is_sharded_checkpoint, read_sharded_checkpoint

SHARD_SUFFIX = ".distcp"  # torch.distributed.checkpoint's shard files: __<rank>_<n>.distcp


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
    held = folder_contents(path) if path.is_dir() else None
    if held:  # before, "is not a whole sharded checkpoint" of a folder with no sign of one (helper report)
        return NotACheckpoint(f"{path} is not a checkpoint: it is {held}")
    if path.is_dir():  # a sharded checkpoint cut short (a shard folder copied without its index, say)
        missing = " or ".join(name for name in (DCP_METADATA, META_FILE) if not (path / name).is_file())
        return NotACheckpoint(f"{path} is not a whole sharded checkpoint: it has no {missing}")
    if path.exists():  # a device, a pipe: "not found" would send the user looking for a typo
        return NotACheckpoint(f"{path} is not a checkpoint file")
    return NotACheckpoint(f"checkpoint not found: {path}")


def folder_contents(folder: Path) -> str | None:
    """What a folder given as a checkpoint holds instead, in a phrase (a diffusers model folder, a folder of
    images, …); None where it holds any file of a sharded checkpoint (whose reader names the one missing)."""
    try:
        names = sorted(entry.name for entry in folder.iterdir())
    except OSError:  # unreadable: the caller's own line names the path
        return None
    if any(name in (DCP_METADATA, META_FILE) or name.endswith(SHARD_SUFFIX) for name in names):
        return None
    if any(config_class(folder / part / "config.json") for part in ("unet", "transformer")):
        return "a diffusers pipeline folder (weights only)"
    kind = config_class(folder / "config.json")
    if kind:
        return f"a diffusers {kind} folder (weights only)"
    pictures = [name for name in names if is_image_name(name)]
    if pictures:
        return f"a folder of images ({len(pictures)}, e.g. {pictures[0]})"
    held = [name for name in names if name.endswith(".ckpt")]
    if held:
        return f"a folder of checkpoints: give one of them, e.g. {folder / held[0]}"
    if not names:
        return "an empty folder"
    return (
        "a folder holding no checkpoint (no checkpoint file, no sharded checkpoint's .metadata and meta.pt)"
    )
