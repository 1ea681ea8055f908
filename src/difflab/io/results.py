"""Where results go: an output folder that is never written into when it holds something (and is emptied and
removed again when the work fails), free file names beside earlier results, and files written whole or not at
all."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from .atomic import NoSpaceLeft, atomic_write_text, is_out_of_space

IN_USE = ".difflab-writing"  # in an output folder while a run writes its results there
BUSY = (
    "output folder {folder} is being written by another run (or holds what a killed run left: "
    f"{IN_USE}); choose another out="
)


def _make_folder(path: Path, exist_ok: bool) -> None:
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        raise
    except OSError as error:
        raise ValueError(f"cannot create the output folder {path}: {error.strerror or error}") from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write into the output folder {path}: permission denied")


def _new_dated_folder(task: str, root: Path) -> Path:
    """<root>/outputs/<task>/<date>/<time>, made in one exclusive step (_2, _3, … when another run took it)."""
    base = root / "outputs" / task / datetime.now().strftime("%Y-%m-%d") / datetime.now().strftime("%H-%M-%S")
    for n in range(1, 1000):
        candidate = base if n == 1 else base.with_name(f"{base.name}_{n}")
        try:
            _make_folder(candidate, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise ValueError(f"could not find a free output folder next to {base}")


@contextlib.contextmanager
def output_folder(
    out: str | Path | None, task: str, root: str | Path | None = None, attempt: tuple[str, int] | None = None
) -> Iterator[Path]:
    """The folder results go to: out= (new or empty; a non-empty one is never written into), else a new
    <root>/outputs/<task>/<date>/<time> (root: the project folder, paths.root_dir; default the current one).
    Checked writable before any work. If the work fails or is stopped, what it wrote there is removed, and the
    folder too when this call made it.

    `attempt`: (job, attempt) of a job its launcher restarts (cluster.jobs.job_attempt). An out= that an earlier
    attempt of the same job was writing when it was killed (no chance to remove its files) is emptied and taken
    over; any other folder being written is refused as always."""
    if out:
        folder = Path(out)
        if folder.is_file():
            raise FileExistsError(f"out={folder} is a file, not a folder; choose another out=")
        if (folder / IN_USE).exists() and _left_by_earlier_attempt(folder, attempt):
            print(f"{folder}: what an earlier attempt of this job left there is removed; writing anew")
            _empty(folder)
        if (folder / IN_USE).exists():
            raise FileExistsError(BUSY.format(folder=folder))
        if folder.is_dir() and any(folder.iterdir()):
            raise FileExistsError(
                f"output folder {folder} already exists and is not empty; choose another out="
            )
        created = not folder.exists()
        _make_folder(folder, exist_ok=True)
    else:
        folder, created = _new_dated_folder(task, Path(root or ".")), True
    try:
        _claim(folder, attempt)
    except ValueError:  # nothing was written: a folder this call made goes too
        if created:
            folder.rmdir()
        raise
    try:
        yield folder
    except BaseException:
        # The folder held nothing before and no other run writes into it, so all it holds now is this work's,
        # unfinished: none of it is kept.
        _empty(folder)
        if created and folder.is_dir():
            folder.rmdir()
        raise
    (folder / IN_USE).unlink()


def _empty(folder: Path) -> None:
    for entry in folder.iterdir() if folder.is_dir() else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _left_by_earlier_attempt(folder: Path, attempt: tuple[str, int] | None) -> bool:
    """True when `folder`'s IN_USE mark names this job and an earlier attempt of it (see _claim)."""
    if attempt is None:
        return False
    try:
        job, _, number = (folder / IN_USE).read_text().rpartition("\n")
    except (OSError, UnicodeDecodeError):
        return False
    return job == attempt[0] and number.isdigit() and int(number) < attempt[1]


def _claim(folder: Path, attempt: tuple[str, int] | None = None) -> None:
    """Mark the empty `folder` as this run's (IN_USE, made exclusively): a second run given the same out= at the
    same moment is refused instead of writing into it, and so a failure's clean-up removes only this run's files.
    The mark holds the job and attempt a launcher may restart, so a later attempt knows the folder as its own."""
    try:
        marker = os.open(folder / IN_USE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        raise FileExistsError(BUSY.format(folder=folder)) from None
    try:
        with os.fdopen(marker, "w") as mark:
            mark.write(f"{attempt[0]}\n{attempt[1]}" if attempt else "")
    except OSError as error:  # a full disk: no empty mark left to refuse the next run
        (folder / IN_USE).unlink()
        if is_out_of_space(error):
            raise NoSpaceLeft(folder / IN_USE) from error
        raise ValueError(
            f"cannot write into the output folder {folder}: {error.strerror or error}"
        ) from error
    if any(entry.name != IN_USE for entry in folder.iterdir()):  # another run finished here in the meantime
        (folder / IN_USE).unlink()
        raise FileExistsError(f"output folder {folder} already exists and is not empty; choose another out=")


def first_free(path: Path) -> Path:
    """path, or path_2, path_3, … (before the suffix): the first name not taken yet."""
    candidates = (
        path if n == 1 else path.with_name(f"{path.stem}_{n}{path.suffix}") for n in itertools.count(1)
    )
    return next(p for p in candidates if not p.exists())


def check_writable_file(path: Path) -> None:
    """A one-line error now, before the work, when `path` exists or cannot be written: its folder is made and a
    scratch file is written and removed there (a real test, also for root on a read-only or full disk)."""
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose another out= (results are never overwritten)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe") as probe:
            probe.write(b"0" * 4096)
            probe.flush()
    except OSError as error:
        raise ValueError(f"cannot write {path}: {error.strerror or error}") from error


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write `data` to path whole or not at all, never over an existing file. If that fails, the result is
    printed to stdout first, so that what was computed is not lost, then the failure is one line."""
    text = json.dumps(data, indent=2)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text, exclusive=True)
    except NoSpaceLeft as error:
        print(text, file=sys.stdout, flush=True)
        raise NoSpaceLeft(path, "; the result is printed above") from error
    except OSError as error:
        print(text, file=sys.stdout, flush=True)
        raise ValueError(
            f"could not write {path}: {error.strerror or error}; the result is printed above"
        ) from error
