"""Exported files get the permissions of any new file (0666 less the umask), as checkpoints do: safetensors writes
its files 0600, which would hide exported weights from the group and the other users a checkpoint is shown to."""

from __future__ import annotations

import os
from pathlib import Path


def umask() -> int:
    """The process's umask (read by setting it and setting it back: os offers no read-only call)."""
    current = os.umask(0o022)
    os.umask(current)
    return current


def as_new_files(folder: Path) -> None:
    """Give every file under `folder` (all written by this process) the mode a plain open() would give it."""
    mode = 0o666 & ~umask()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)
