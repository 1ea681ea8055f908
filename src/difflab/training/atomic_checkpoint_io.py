"""Write every checkpoint whole or not at all: a temp file beside the target, fsync, then os.replace."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.plugins.io import CheckpointIO

from ..io.atomic import TEMP_NAME, NoSpaceLeft, atomic_file, where_space_ran_out
from ..io.sharded_checkpoint import is_sharded_checkpoint
from .resume_advice import resume_advice

# The weights a checkpoint holds: the EMA's `state_dict` and the raw ones WeightAveraging keeps for resume.


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local writes are atomic (non-finite weights are refused earlier, on every rank,
    by DiffusionModule.on_save_checkpoint).

    Lightning's own save goes through an fsspec transaction whose temp file lives in $TMPDIR; on another
    filesystem the commit is a copy, and a kill during it leaves a truncated last.ckpt. Here the temp file is
    in the target's folder, so the final rename is atomic: a reader sees the previous file or the new one.
    Remote paths (s3://, …) keep Lightning's behaviour.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, Path(path))


def _is_local(path: str | Path) -> bool:
    return isinstance(get_filesystem(path), LocalFileSystem)


def atomic_torch_save(obj: Any, target: Path) -> None:
    """torch.save `obj` to `target` through a temp file in the same folder, flushed to disk and renamed; a full
    disk is one NoSpaceLeft line naming `target`, and the previous `target` stays as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target) as file:
        torch.save(obj, file)


def with_atomic_checkpoints(plugins: Any) -> list[Any]:
    """The Trainer's `plugins` (None, one or a sequence) plus AtomicCheckpointIO, unless they hold a CheckpointIO
    of their own (Lightning accepts only one)."""
    if plugins is None:
        plugins = []
    plugins = list(plugins) if isinstance(plugins, Sequence) and not isinstance(plugins, str) else [plugins]
    if any(isinstance(p, CheckpointIO) for p in plugins):
        return plugins
    return [*plugins, AtomicCheckpointIO()]


def remove_unfinished_writes(folder: Path) -> list[Path]:
    """Delete the temp files and folders (`.<name>.<12 hex>.tmp`) that writes killed mid-way left in `folder`; a run folder
    belongs to one run, so at its start none of them is being written. Returns what was removed."""
    removed = []
    for temp in folder.glob(".*.tmp") if folder.is_dir() else []:
        if not TEMP_NAME.fullmatch(temp.name):
            continue
        if temp.is_dir():  # a sharded checkpoint's folder
            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)
        removed.append(temp)
    return removed


def newest_checkpoint(folder: Path) -> Path | None:
    """The most recently written .ckpt (file or folder of shards) in `folder` (the last good one after a failed
    write)."""
    found = (
        [p for p in folder.glob("*.ckpt") if p.is_file() or is_sharded_checkpoint(p)]
        if folder.is_dir()
        else []
    )
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def out_of_space(error: BaseException, output_dir: Path) -> NoSpaceLeft:
    """One line for a disk that filled up during training: the file, and the checkpoint to resume from."""
    where = where_space_ran_out(error) or output_dir
    last_good = newest_checkpoint(output_dir / "checkpoints")
    advice = (
        f"; the last good checkpoint is {last_good}: free some space and {resume_advice(last_good)}"
        if last_good
        # The folder then holds a run with nothing to resume, which refuses the same command run again.
        else f"; no checkpoint was written yet: free some space and start over in a new hydra.run.dir (or remove "
        f"{output_dir} first)"
    )
    return NoSpaceLeft(where, advice)


def write_refused(error: OSError, output_dir: Path) -> ValueError:
    """One line for a run folder that stopped taking writes during training (made read-only, or its file system
    remounted so): where, and the checkpoint to resume from once it takes them again."""
    # The folder, not the file: a write goes to a temp file named after its target (.last.ckpt.<hex>.tmp).
    folder = Path(os.fsdecode(error.filename)).parent
    last_good = newest_checkpoint(output_dir / "checkpoints")
    advice = (
        f"the last good checkpoint is {last_good}: once {folder} can be written again, {resume_advice(last_good)}"
        if last_good
        else f"no checkpoint was written yet: start over in a new hydra.run.dir (or remove {output_dir} first)"
    )
    return ValueError(f"{error.strerror} in {folder}; {advice}")
