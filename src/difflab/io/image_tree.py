"""The picture files (or other files) at any depth under a folder, as training folders and evaluate.py's images=
read them: hidden folders skipped, symlinked folders followed, each real folder once (a link back up the tree is a
loop)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator

from .decode import is_image_name


def image_paths(
    root: str | os.PathLike,
    walked: set[tuple[int, int]] | None = None,
    outside: Callable[[str], bool] | None = None,
) -> Iterator[str]:
    """Each picture file name under `root` (by its suffix; not opened), folders and files in sorted order.
    `walked`: the (device, inode) of folders already read, shared by calls over several roots; `outside`: whether
    a folder, by its real path, is not to be read from here (another class's)."""
    return tree_files(root, is_image_name, walked, outside)


def tree_files(
    root: str | os.PathLike,
    keep: Callable[[str], bool],
    walked: set[tuple[int, int]] | None = None,
    outside: Callable[[str], bool] | None = None,
) -> Iterator[str]:
    """Each file under `root` whose name `keep` accepts, walked as image_paths walks (captions beside the images
    are found where the images are)."""
    walked = set() if walked is None else walked
    for directory, dirnames, filenames in os.walk(root, followlinks=True):
        folder = os.stat(directory)
        if (folder.st_dev, folder.st_ino) in walked or (
            outside is not None and outside(os.path.realpath(directory))
        ):
            dirnames[:] = []
            continue
        walked.add((folder.st_dev, folder.st_ino))
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        for name in sorted(filenames):
            path = os.path.join(directory, name)
            if keep(name) and not _is_special(path):
                yield path


def _is_special(path: str) -> bool:
    """A named pipe, socket or device under a picture's name: opening it to read its header blocked the run
    forever. (A dangling link is no special file: it is named where it cannot be read.)"""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
