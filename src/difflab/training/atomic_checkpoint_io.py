"""Write every checkpoint whole or not at all: a temp file beside the target, fsync, then os.replace."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.plugins.io import CheckpointIO

# The weights a checkpoint holds: the EMA's `state_dict` and the raw ones WeightAveraging keeps for resume.


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local writes are atomic (non-finite weights are refused earlier, on every rank,
    by DiffusionModule.on_save_checkpoint).

    Lightning's own save goes through an fsspec transaction whose temp file lives in $TMPDIR; on another
    filesystem the commit is a copy, and a kill during it leaves a truncated last.ckpt. Here the temp file is
    in the target's folder, so the final rename is atomic: a reader sees the previous file or the new one.
    Remote paths (s3://, …) keep Lightning's behaviour.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, Path(path))


def _is_local(path: _PATH) -> bool:
    return isinstance(get_filesystem(path), LocalFileSystem)


def atomic_torch_save(obj: Any, target: Path) -> None:
    """torch.save `obj` to `target` through a temp file in the same folder, flushed to disk and renamed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    # Not tempfile.mkstemp: its 0600 mode would hide checkpoints from the group; 0666 lets the umask decide.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_folder(target.parent)  # the rename itself survives a power cut only once the folder is synced


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def with_atomic_checkpoints(plugins: Any) -> list[Any]:
    """The Trainer's `plugins` (None, one or a sequence) plus AtomicCheckpointIO, unless they hold a CheckpointIO
    of their own (Lightning accepts only one)."""
    if plugins is None:
        plugins = []
    plugins = list(plugins) if isinstance(plugins, Sequence) and not isinstance(plugins, str) else [plugins]
    if any(isinstance(p, CheckpointIO) for p in plugins):
        return plugins
    return [*plugins, AtomicCheckpointIO()]
