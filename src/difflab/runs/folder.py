"""A run folder belongs to one run: what marks one, who may go back into one (a resume into its own folder, a
requeued job; a folder holding another run is refused), claiming a fresh one in one exclusive step, the names a
resume writes under beside the run's first part, and giving a fresh one back when its run is refused before its
first step (a refused run leaves nothing behind, as a refused sample.py leaves no out= folder)."""

from __future__ import annotations

import itertools
import os
import re
import shutil
from pathlib import Path
from typing import IO

from ..io.results import refuse_a_dangling_link
from ..overrides import pasteable
from ..runlogs import METRICS_FILE
from .folder_lock import HeldElsewhere, fcntl, lock_mark, sign

# What only a run writes: also the metrics.jsonl every run logs to, which is all a run with hydra.output_subdir=null,
# logger=none and no checkpoint leaves (before, a sweep trained over such runs and compare did not see them).
RUN_MARKERS = {"checkpoints", "samples", ".hydra", "wandb", METRICS_FILE}
TRAINING = ".difflab-training"  # locked by the process training in the folder, for as long as it lives
# Everything a run writes into its folder; a user's own files in a folder they named are never touched.
RUN_ENTRIES = RUN_MARKERS | {"train.log", "csv", "tensorboard", "lightning_logs", "wandb_run_id", TRAINING}
# The log of each DDP process Lightning starts beside rank 0 (its Hydra job is named train_ddp_process_<rank>).
DDP_PROCESS_LOG = re.compile(r"train_ddp_process_[0-9]+\.log")
_HELD: dict[Path, IO[str]] = {}  # the run folders this process trains in, their marks kept open (and locked)


def is_run_entry(name: str) -> bool:
    """True for a file or folder name that a run writes into its folder."""
    return name in RUN_ENTRIES or DDP_PROCESS_LOG.fullmatch(name) is not None


def existing_run_files(run_dir: Path) -> list[str]:
    """What in `run_dir` shows a previous run (checkpoints, samples, logs), if anything."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name in RUN_MARKERS)


def reenters_run_folder(run_dir: Path, resume: Path | None, named: bool, requeued: bool) -> bool:
    """True when this run goes back into `run_dir` as it stands: a resume from a checkpoint inside it, or a
    requeued job starting over in its folder; False when the folder is to be claimed fresh. A one-line ValueError
    when it holds another run (or cannot be written): `named` says the user chose it (else it is a dated default)."""
    found = existing_run_files(run_dir)
    own_folder = resume is not None and run_dir.resolve() in resume.resolve().parents
    if found and not named and not own_folder and not requeued:
        # A dated folder another run took this second (training there now or not): claim moves on to <time>_2.
        return False
    # (A requeued job goes back in whatever lock it sees: hold() says why.)
    if found and not own_folder and not requeued and (holder := training_there_now(run_dir)) is not None:
        # Before: "remove the folder if that run has ended", for a folder whose run was training at that moment.
        raise ValueError(
            f"run folder {run_dir} is in use by a run training there now ({holder}): pick a new hydra.run.dir"
        )
    if found and (own_folder or (resume is None and requeued)):
        # Its subfolders too (checkpoints/, samples/, the loggers'): before, a read-only checkpoints/ failed at the
        # first save, steps later.
        for folder in (run_dir, *sorted(p for p in run_dir.iterdir() if p.is_dir())):
            if not os.access(folder, os.W_OK | os.X_OK):
                read_only = os.statvfs(folder).f_flag & os.ST_RDONLY
                why = "it is on a read-only file system" if read_only else "permission denied"
                raise ValueError(f"cannot write in {folder}: {why} (the resumed run writes there)")
        return True
    if found and resume is not None:
        raise ValueError(
            f"run folder {run_dir} already holds another run ({', '.join(found)}); resume {resume} "
            f"into its own folder ({pasteable('hydra.run.dir', resume.resolve().parent.parent)}) or a new one"
        )
    if found and named and not has_checkpoints(run_dir):  # a run stopped before its first checkpoint
        # Where locks work, no live process holds it (checked above): that run has ended.
        ended = (
            "that run has ended: remove the folder to start over in it"
            if fcntl is not None
            else ("remove the folder if that run has ended")
        )
        raise ValueError(
            f"run folder {run_dir} already holds a run that wrote no checkpoint ({', '.join(found)}): pick a new "
            f"hydra.run.dir, or {ended}"
        )
    if found and named:
        raise ValueError(
            f"run folder {run_dir} already holds a run ({', '.join(found)}); pick a new hydra.run.dir or "
            "resume with ckpt_path=last"
        )
    return False


def runs_in_sweep_folder(sweep_dir: Path, depth: int = 8) -> list[Path]:
    """The run folders already inside `sweep_dir` (a job folder <num>/, or deeper for a hydra.sweep.subdir with
    slashes, up to `depth` levels: before, 3, and a/b/c/${hydra.job.num} was trained over): Hydra would write a
    new sweep's jobs over them, .hydra files, checkpoints and metrics alike."""
    found, level = [], [sweep_dir] if sweep_dir.is_dir() else []
    for _ in range(depth):
        children = sorted(child for folder in level for child in folder.iterdir() if child.is_dir())
        runs = {child for child in children if existing_run_files(child)}
        found += sorted(runs)
        level = [child for child in children if child not in runs]  # only folders holding no run go deeper
    return found


# What a run folder needs before its first checkpoint: Hydra's three .hydra files and the first lines of train.log
# (tens of KiB). Below it, Hydra's own write of config.yaml ended the command in a traceback and left a folder
# that refused the same command.
ROOM_TO_START = 1 << 20


def check_room_to_start(run_dir: Path) -> None:
    """A one-line refusal when the disk that `run_dir` is (or would be) on has less than ROOM_TO_START free."""
    disk = next((p for p in [run_dir, *run_dir.parents] if p.exists()), None)
    if disk is None:
        return
    free = shutil.disk_usage(disk).free
    if free < ROOM_TO_START:
        raise ValueError(
            f"no space left on device for the run folder {run_dir}: {free // 1024} KiB free on its disk; free "
            "some space or pick another hydra.run.dir"
        )


def claim_run_folder(run_dir: Path, named: bool) -> Path:
    """Make `run_dir`/.hydra in one exclusive step, so no other run can take the folder too, and return the folder.
    When another run took it first (a dated folder, in the same second) this run moves to <folder>_2 (_3, …); a
    folder the user `named` is refused instead. A one-line ValueError also for a folder that cannot be written."""
    refuse_a_dangling_link(run_dir, "hydra.run.dir")  # else "was just taken by another run"
    for n in itertools.count(1):
        candidate = run_dir if n == 1 else run_dir.with_name(f"{run_dir.name}_{n}")
        if candidate.exists() and not candidate.is_dir():  # not another run's, as mkdir's error would say
            raise ValueError(f"cannot write the run folder {candidate}: it is a file, not a folder")
        try:
            if existing_run_files(candidate):
                raise FileExistsError(candidate)
            candidate.mkdir(parents=True, exist_ok=True)
            (candidate / ".hydra").mkdir()
        except FileExistsError:
            if named:
                raise ValueError(
                    f"run folder {run_dir} was just taken by another run; pick a new hydra.run.dir"
                ) from None
            continue
        except OSError as error:
            raise ValueError(f"cannot write the run folder {candidate}: {error.strerror or error}") from error
        return candidate
    raise AssertionError("unreachable")


def hold_run_folder(run_dir: Path) -> None:
    """Lock `run_dir` for this process's lifetime (the system lets go of the lock however the process ends, so a
    killed run leaves no stale lock). A one-line ValueError when another live process holds it: a resume started
    while the run still trains would write the same checkpoints, metrics and log (step_…-v1.ckpt copies, a
    last.ckpt from either). Where the file system has no locks, nothing is told apart."""
    if fcntl is None:
        return
    path = run_dir / TRAINING
    try:
        mark = path.open("a+")
    except OSError as error:
        raise ValueError(f"cannot write the run folder {run_dir}: {error.strerror or error}") from error
    try:
        if not lock_mark(mark):
            return
    except HeldElsewhere as held:
        raise ValueError(
            f"run folder {run_dir} is in use by a run still training there ({held.holder}): resume once it has "
            "ended, or stop it first (Ctrl-C or SIGTERM saves a checkpoint to resume from)"
        ) from None
    sign(mark)
    _HELD[run_dir.resolve()] = mark  # open until the process ends: closing it would let go of the lock


def training_there_now(run_dir: Path) -> str | None:
    """Who holds `run_dir` (hold_run_folder's lock: "pid N on host"), or None when no live process does (or the
    file system has no locks). Takes nothing: the lock is tried and let go at once."""
    if fcntl is None:
        return None
    try:
        mark = (run_dir / TRAINING).open()
    except OSError:
        return None
    with mark:
        try:
            fcntl.flock(mark.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return mark.read().strip() or "another process"
        except OSError:
            return None
        fcntl.flock(mark.fileno(), fcntl.LOCK_UN)
        return None


def let_go(run_dir: Path) -> None:
    """Unlock `run_dir` once its run has ended in this process: a sweep's process trains its next job on, while
    this one may be resumed."""
    mark = _HELD.pop(run_dir.resolve(), None)
    if mark is not None:
        mark.close()


def resumed_name(folder: Path, step: int) -> str:
    """resumed_step_<step> (then _2, _3, …): the first free name in `folder` for what a resume from `step` writes
    beside the run's first part (its Hydra files, its CSV metrics), which is never overwritten."""
    name, n = f"resumed_step_{step:07d}", 1
    while (folder / name).exists():
        n += 1
        name = f"resumed_step_{step:07d}_{n}"
    return name


def has_checkpoints(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("*.ckpt"))


def has_last_checkpoint(run_dir: Path) -> bool:
    """Whether ckpt_path=last finds something to resume in `run_dir` (a file, or a whole folder of shards: one
    cut short is refused by the resume, so advice naming it would send the user to an error)."""
    from ..io.sharded_checkpoint import is_sharded_checkpoint  # imports torch: kept off the CLI checks' path

    last = run_dir / "checkpoints" / "last.ckpt"
    return last.is_file() or is_sharded_checkpoint(last)


def has_logged(run_dir: Path) -> bool:
    """Whether the run logged a metric (a line of its metrics.jsonl): it trained, and its logs say how."""
    metrics = run_dir / METRICS_FILE
    return metrics.is_file() and metrics.stat().st_size > 0


def release(run_dir: Path) -> None:
    """Remove what a run wrote into `run_dir` (the folder too, when that leaves it empty)."""
    if not run_dir.is_dir():
        return
    for entry in run_dir.iterdir():
        if is_run_entry(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    if not any(run_dir.iterdir()):
        run_dir.rmdir()
