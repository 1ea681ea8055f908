"""A sweep folder belongs to one sweep (-m): claimed by locking its mark for as long as the sweep's process lives,
so two sweeps started together never train their jobs into the same <sweep>/<job> folders. The lock decides
which sweep has the folder; a folder holding an earlier sweep's runs is refused by the caller once it holds it."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import IO

from .folder import runs_in_sweep_folder
from .folder_lock import HeldElsewhere, lock_mark, sign

SWEEPING = ".difflab-sweep"  # locked by the process running the sweep, for as long as it lives
_HELD: dict[Path, IO[str]] = {}  # the sweep folders this process runs, their marks kept open (and locked)


class SweepFolderInUse(ValueError):
    """Another live sweep holds the folder."""


class SweepFolderUsed(ValueError):
    """The folder holds an earlier sweep's runs (`runs`), which a new sweep's jobs would train over, or the jobs
    an earlier sweep submitted to a cluster (`submitted`: submitit's job folders), which will."""

    def __init__(self, runs: list[Path], submitted: list[Path] | None = None) -> None:
        super().__init__(f"{len(runs)} runs")
        self.runs, self.submitted = runs, submitted or []


# Where hydra/launcher=slurm (and submitit_local) keep each submitted job's script, pickles and logs, by job id.
SUBMITTED = ".submitit"


def submitted_jobs(sweep_dir: Path) -> list[Path]:
    """The jobs an earlier sweep submitted from `sweep_dir`: queued, running or ended, they train into its job
    folders. Before, a second sweep took a folder whose first sweep's jobs still waited in the queue (its process
    stopped), and each of its jobs then resumed the first sweep's checkpoint as its own."""
    folder = sweep_dir / SUBMITTED
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _lock(sweep_dir: Path) -> IO[str] | None:
    """Lock `sweep_dir`'s mark, open until the returned file is closed; SweepFolderInUse naming its holder when
    another live process has it. Where the file system has no locks, nothing is told apart (None)."""
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        mark = (sweep_dir / SWEEPING).open("a+")
    except OSError as error:
        raise ValueError(f"cannot write the sweep folder {sweep_dir}: {error.strerror or error}") from error
    try:
        return mark if lock_mark(mark) else None
    except HeldElsewhere as held:
        raise SweepFolderInUse(
            f"sweep folder {sweep_dir} is in use by a sweep running there now ({held.holder}): its jobs would train "
            "into the same folders; pick a new hydra.sweep.dir"
        ) from None


def claim_sweep_folder(sweep_dir: Path, named: bool) -> Path:
    """Lock `sweep_dir` for this process's lifetime and return it. Where another sweep holds it (or its runs are
    there) and the user did not name it (a dated default, taken in the same second), the sweep moves to
    <folder>_2 (_3, …); a folder the user `named` is refused: SweepFolderInUse (a one-line message) while another
    sweep holds it, SweepFolderUsed when it holds runs (left as it was, its mark too)."""
    for n in itertools.count(1):
        candidate = sweep_dir if n == 1 else sweep_dir.with_name(f"{sweep_dir.name}_{n}")
        if candidate.exists() and not candidate.is_dir():
            raise ValueError(f"cannot write the sweep folder {candidate}: it is a file, not a folder")
        new_mark = not (candidate / SWEEPING).exists()
        try:
            mark = _lock(candidate)
        except SweepFolderInUse:
            if named:
                raise
            continue
        # Checked once the lock is held: two sweeps checking at once both found the folder empty.
        runs, submitted = runs_in_sweep_folder(candidate), submitted_jobs(candidate)
        if runs or submitted:
            if mark is not None:
                mark.close()
            if new_mark:  # an earlier sweep's folder is left as it was
                (candidate / SWEEPING).unlink(missing_ok=True)
            if named:
                raise SweepFolderUsed(runs, submitted)
            continue
        if mark is not None:
            sign(mark)
            # Open until the process ends: closing it would let go of the lock.
            _HELD[candidate.resolve()] = mark
        return candidate
    raise AssertionError("unreachable")
