"""Write a file whole or not at all: into a temp file beside it, synced, then renamed over (or, exclusively,
linked to) its name. A full disk becomes one `NoSpaceLeft` line naming the file, with no partial file left."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# torch's zip writer reports a short write of the Python file it writes through as a RuntimeError.
_TORCH_SHORT_WRITE = ("unexpected pos", "file write failed")
# A library written in Rust (safetensors, under every diffusers save) gives the OS error only in its message:
# "I/O error: No space left on device (os error 28)".
_RUST_NO_SPACE = tuple(f"(os error {code})" for code in _NO_SPACE)


class NoSpaceLeft(ValueError):
    """The disk (or quota) ran out while writing `path`; the partial file was removed."""

    def __init__(self, path: str | Path, advice: str = "") -> None:
        self.path = Path(path)
        super().__init__(f"no space left on device writing {path}; nothing partial was left{advice}")


def is_out_of_space(error: BaseException | None) -> bool:
    """True when `error`, or one raised while it was handled, is a full disk or quota (errno ENOSPC/EDQUOT,
    or EFBIG from a file size limit)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, NoSpaceLeft):
            return True
        if isinstance(error, OSError) and error.errno in _NO_SPACE:
            return True
        if not isinstance(error, OSError) and any(text in str(error) for text in _RUST_NO_SPACE):
            return True
        error = error.__cause__ or error.__context__
    return False


def where_space_ran_out(error: BaseException) -> Path | None:
    """The file the first out-of-space error in `error`'s chain names, if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, NoSpaceLeft):
            return error.path
        if isinstance(error, OSError) and error.errno in _NO_SPACE and error.filename:
            return Path(os.fsdecode(error.filename))
        error = error.__cause__ or error.__context__
    return None


_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_refused_under(error: BaseException, folder: Path) -> OSError | None:
    """The first error in `error`'s chain that refused access to a path under `folder` (permissions taken away, a
    file system remounted read-only while a run wrote there), if any; None for anything else (an input elsewhere;
    a write whose error names no file, as torch's C++ writer's)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _REFUSED and error.filename:
            path = Path(os.fsdecode(error.filename)).absolute()
            if path.is_relative_to(folder.absolute()):
                return error
        error = error.__cause__ or error.__context__
    return None


def _short_write_on_full_disk(error: BaseException, folder: Path) -> bool:
    """torch.save's short write (no errno) counts as a full disk when the folder's disk has (almost) no room."""
    if not any(text in str(error) for text in _TORCH_SHORT_WRITE):
        return False
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 1 << 20


# What a write in progress is called beside its target: `.<name>.<12 hex>.tmp`, hidden, and removed at the next
# run's start if the write was killed (training.atomic_checkpoint_io.remove_unfinished_writes).
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")


def temp_name(target: Path) -> Path:
    """A fresh hidden name beside `target` to write it under before the rename (TEMP_NAME)."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", exclusive: bool = False) -> Iterator[IO]:
    """An open file that becomes `path` only once written, flushed and synced.

    exclusive: never replace an existing `path` (FileExistsError then, and the new file is dropped).
    Created with mode 0666 less the umask, like any file (not tempfile's 0600).
    """
    target = Path(path)
    temp = temp_name(target)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        if exclusive:
            os.link(temp, target)  # fails if the name is taken, unlike a rename
            os.unlink(temp)
        else:
            os.replace(temp, target)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        if isinstance(error, NoSpaceLeft):
            raise  # a write inside this one ran out of space: that file is the one to name
        if is_out_of_space(error) or _short_write_on_full_disk(error, target.parent):
            raise NoSpaceLeft(target) from error
        raise
    fsync_folder(target.parent)  # the rename itself survives a power cut only once the folder is synced


def atomic_write_text(path: str | Path, text: str, exclusive: bool = False) -> None:
    """Write `text` to `path` whole or not at all (see atomic_file)."""
    with atomic_file(path, "w", exclusive=exclusive) as file:
        file.write(text)


def fsync_folder(folder: Path) -> None:
    """Sync `folder`'s entries to disk: a rename into it survives a power cut only after this."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
