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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from .atomic import NoSpaceLeft, atomic_write_text, is_out_of_space, write_refused_under

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no flock, so a running run is not told from a stopped one there
    fcntl = None

IN_USE = ".difflab-writing"  # in an output folder while a run writes there (or what a stopped run left)
SAMPLES = "images"  # the folder of a sample.py output folder its samples are in, beside grid.png
RESULTS_SETTINGS = "settings.json"  # how sample.py made them, written once they are all made


def is_results_folder(folder: Path) -> bool:
    """True for a folder sample.py wrote or is writing: its images/ beside settings.json, samples.npz or the in-use
    mark. (A folder of one's own that merely holds an images/ subfolder is none.)"""
    marks = (RESULTS_SETTINGS, "samples.npz", IN_USE)
    return (folder / SAMPLES).is_dir() and any((folder / mark).exists() for mark in marks)


def is_training_run_folder(folder: Path) -> bool:
    """True for a folder train.py wrote: the metrics.jsonl every run logs to, or its checkpoints/ beside Hydra's
    .hydra/ (a folder of one's own that merely holds a checkpoints/ subfolder is none)."""
    return (folder / "metrics.jsonl").is_file() or (
        (folder / "checkpoints").is_dir() and (folder / ".hydra").is_dir()
    )


def refuse_a_training_run_folder(folder: Path) -> None:
    """A one-line error for pictures asked of a train.py run folder: its grids are not samples to score."""
    if is_training_run_folder(folder):
        raise _grids_not_samples(f"{folder} is a training run folder", folder)


def _grids_not_samples(where: str, run: Path) -> ValueError:
    return ValueError(
        f"{where}: its pictures are sample grids, not samples; score its model with evaluate.py ckpt={run}, or "
        "give images= the out= folder of a sample.py run"
    )


# The folders of a train.py run that hold its pictures: sample grids, and W&B's copies of them.
RUN_PICTURES = ("samples", "wandb")


def refuse_pictures_of_a_training_run(path: Path) -> None:
    """A one-line error for `path` when it is a train.py run folder or lies in its samples/ or wandb/ (grids);
    a folder of one's own inside a run folder (a sample.py out= there) is read."""
    given, path = path, path.resolve()
    for folder in [path, *path.parents]:
        if is_results_folder(folder):
            return
        below = path.relative_to(folder).parts
        if is_training_run_folder(folder) and (not below or below[0] in RUN_PICTURES):
            where = (
                f"{given} is a training run folder"
                if folder == path
                else f"{given} lies in the training run folder {folder}"
            )
            raise _grids_not_samples(where, folder)


def refuse_unfinished(path: Path, then: str) -> None:
    """A one-line error for a sample.py folder (or its images/) still marked as being written: a run writing it,
    or what a stopped one kept to resume, which holds part of the set; `then` says what the user goes on to do."""
    # Resolved: `image=.` inside images/, or a link to it, names it otherwise.
    resolved = path.resolve()
    folder = resolved.parent if resolved.name == SAMPLES else resolved
    if (folder / IN_USE).exists():
        raise ValueError(
            f"{path} is unfinished ({IN_USE}: a sample.py is writing it, or was stopped and kept what it had "
            f"made); finish it with the same sample.py command and resume=true, then {then}"
        )


BUSY = (
    "output folder {folder} is being written by another run (or holds what a stopped run left: "
    f"{IN_USE}); choose another out=, or add resume=true to finish what a stopped sample.py left there"
)
RESUME_HINT = "run the same command with resume=true to finish it"
RUNNING = (
    "output folder {folder} is being written by a run that is still going; wait for it or choose another out="
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
    out: str | Path | None,
    task: str,
    root: str | Path | None = None,
    attempt: tuple[str, int] | None = None,
    resume: bool = False,
    keep_on: tuple[type[BaseException], ...] = (),
    finished_mark: str | None = None,
) -> Iterator[OutputFolder]:
    """The folder results go to: out= (new or empty; a non-empty one is never written into), else a new
    <root>/outputs/<task>/<date>/<time> (root: the project folder, paths.root_dir; default the current one).
    Checked writable before any work. If the work fails, what it wrote there is removed, and the folder too when
    this call made it.

    Work stopped by one of `keep_on` (a stop signal, Ctrl-C, the device's memory) is kept instead, marked
    unfinished (IN_USE), when it wrote any file; the stop is noted with where it is and how to finish it. Such a
    folder is continued, not refused, when `resume` is set or `attempt` — (job, attempt) of a job its launcher
    restarts (cluster.jobs.job_attempt) — is a later attempt of the job that left it (killed outright, it left its
    files too; with no out=, the dated folder it took): the caller finds what it holds (OutputFolder.continued)
    and keeps it whatever happens. `finished_mark`: the file a finished run of the task leaves last, so that a
    resume refused in a full folder says whether it is one."""
    folder, created, continued = _chosen_folder(out, task, root, attempt, resume, finished_mark)
    try:
        mark = _claim(folder, attempt, replace=continued)
    except ValueError:  # nothing was written: a folder this call made goes too
        if created:
            folder.rmdir()
        raise
    with mark:  # held open, and locked where the file system can, until the work ends
        try:
            yield OutputFolder(folder, continued)
        except BaseException as error:
            hint = RESUME_HINT if out else RESUME_HINT.replace("resume=true", f"out={folder} resume=true")
            if (refused := write_refused_under(error, folder)) is not None:
                # Made read-only (or remounted so) while it wrote: before, a traceback, then a second one from
                # emptying the folder it could no longer change.
                made_some = continued or _holds_files(folder)
                if not made_some:
                    with contextlib.suppress(OSError):  # as far as the folder still lets itself be changed
                        _empty(folder)
                        if created:
                            folder.rmdir()
                raise _write_refused(refused, folder, made_some, hint) from error
            if isinstance(error, keep_on) and (continued or _holds_files(folder)):
                error.add_note(f"what it had made is kept in {folder} (unfinished): {hint}")
                raise
            if continued:  # a refusal or a failure in a folder a stopped run left: it stays as it was left
                raise
            # The folder held nothing before and no other run writes into it, so all it holds now is this
            # work's, unfinished: none of it is kept.
            _empty(folder)
            if created and folder.is_dir():
                folder.rmdir()
            raise
        (folder / IN_USE).unlink()


@dataclass(frozen=True)
class OutputFolder:
    """The folder output_folder hands over, and whether it holds what a stopped run left there (continued)."""

    path: Path
    continued: bool = False


def _chosen_folder(
    out: str | Path | None,
    task: str,
    root: str | Path | None,
    attempt: tuple[str, int] | None,
    resume: bool,
    finished_mark: str | None = None,
) -> tuple[Path, bool, bool]:
    """(the folder, whether this call made it, whether it continues a stopped run's folder), or a one-line
    refusal."""
    if out is not None and not str(out).strip():  # `out=` typed with its value forgotten
        raise ValueError(
            f"out= is empty: give a folder, or leave out= off for a new outputs/{task}/<date>/<time>"
        )
    if not out:  # a new dated folder, or the one an earlier attempt of this job took
        earlier = _earlier_attempts_dated_folder(task, Path(root or "."), attempt)
        if earlier is not None:
            return earlier, False, True
        return _new_dated_folder(task, Path(root or ".")), True, False
    folder = Path(out)
    refuse_a_dangling_link(folder, "out")
    if folder.is_file():
        raise FileExistsError(f"out={folder} is a file, not a folder; choose another out=")
    if (folder / IN_USE).exists():
        if resume or _left_by_earlier_attempt(folder, attempt):
            return folder, False, True
        raise FileExistsError(BUSY.format(folder=folder))
    if folder.is_dir() and any(folder.iterdir()):
        raise FileExistsError(
            f"output folder {folder} already exists and is not empty{_why_no_resume(folder, resume, finished_mark)}; "
            "choose another out="
        )
    created = not folder.exists()
    _make_folder(folder, exist_ok=True)
    return folder, created, False


def _why_no_resume(folder: Path, resume: bool, finished_mark: str | None) -> str:
    """Why a full folder given with resume=true is not continued: it holds no stopped run's mark. Before, any such
    folder was called "a finished run", a run folder or a folder of notes too."""
    if not resume:
        return ""
    if finished_mark and (folder / finished_mark).is_file():
        return " (a finished run: nothing to resume)"
    return f" (neither a stopped nor a finished run's output: it has no {IN_USE} mark, nothing to resume)"


def _earlier_attempts_dated_folder(task: str, root: Path, attempt: tuple[str, int] | None) -> Path | None:
    """The dated folder (<root>/outputs/<task>/<date>/<time>) an earlier attempt of this job left unfinished."""
    if attempt is None:
        return None
    marks = sorted((root / "outputs" / task).glob(f"*/*/{IN_USE}"))
    return next((mark.parent for mark in marks if _left_by_earlier_attempt(mark.parent, attempt)), None)


def _write_refused(refused: OSError, folder: Path, made_some: bool, hint: str) -> ValueError:
    """One line for an output folder that stopped taking writes: where, and what of the work is kept there."""
    where = Path(os.fsdecode(refused.filename)).parent
    if not made_some:
        return ValueError(f"{refused.strerror} in {where}; nothing was made yet")
    return ValueError(
        f"{refused.strerror} in {where}; what it had made is kept in {folder} (unfinished): once it can be "
        f"written again, {hint}"
    )


def _holds_files(folder: Path) -> bool:
    """Whether the work wrote any file in `folder` (hidden ones aside: the IN_USE mark, a write's temp file)."""
    return any(path.is_file() and not path.name.startswith(".") for path in folder.rglob("*"))


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


def _claim(folder: Path, attempt: tuple[str, int] | None = None, replace: bool = False) -> IO[str]:
    """Mark the empty `folder` as this run's (IN_USE, made exclusively): a second run given the same out= at the
    same moment is refused instead of writing into it, and so a failure's clean-up removes only this run's files.
    The mark holds the job and attempt a launcher may restart, so a later attempt knows the folder as its own.
    Returns the mark, open and locked (_lock) for as long as the run writes.
    replace: the folder is a stopped run's, continued: its mark is rewritten as this run's, unless the run that
    made it is still going (its lock is held: a folder given resume=true too soon)."""
    text = f"{attempt[0]}\n{attempt[1]}" if attempt else ""
    if replace:
        try:  # the same file, rewritten: a later resume=true sees this run's lock on it
            mark = open(folder / IN_USE, "r+")  # noqa: SIM115 (the caller holds it open while the run writes)
        except OSError as error:
            raise ValueError(f"cannot open {folder / IN_USE}: {error.strerror or error}") from error
        if not _lock(mark):
            mark.close()
            raise FileExistsError(RUNNING.format(folder=folder))
        try:
            mark.truncate(0)
            mark.write(text)
            mark.flush()
        except OSError as error:
            mark.close()
            raise ValueError(
                f"cannot write into the output folder {folder}: {error.strerror or error}"
            ) from error
        return mark
    try:
        marker = os.open(folder / IN_USE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        raise FileExistsError(BUSY.format(folder=folder)) from None
    mark = os.fdopen(marker, "w")
    _lock(mark)
    try:
        mark.write(text)
        mark.flush()
    except OSError as error:  # a full disk: no empty mark left to refuse the next run
        with contextlib.suppress(OSError):
            mark.close()
        (folder / IN_USE).unlink()
        if is_out_of_space(error):
            raise NoSpaceLeft(folder / IN_USE) from error
        raise ValueError(
            f"cannot write into the output folder {folder}: {error.strerror or error}"
        ) from error
    if any(entry.name != IN_USE for entry in folder.iterdir()):  # another run finished here in the meantime
        mark.close()
        (folder / IN_USE).unlink()
        raise FileExistsError(f"output folder {folder} already exists and is not empty; choose another out=")
    return mark


def _lock(mark: IO[str]) -> bool:
    """Lock the open mark for this process (the system lets go of it when the process ends, however it ends);
    False when another process holds it. Where the file system has no locks, True: nothing to tell then."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(mark.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK, ENOSYS, EOPNOTSUPP: a file system without locks
        return True
    return True


def first_free(path: Path) -> Path:
    """path, or path_2, path_3, … (before the suffix): the first name not taken yet."""
    candidates = (
        path if n == 1 else path.with_name(f"{path.stem}_{n}{path.suffix}") for n in itertools.count(1)
    )
    return next(p for p in candidates if not p.exists())


def refuse_a_dangling_link(path: Path, given: str) -> None:
    """A one-line error for a path that is, or lies below, a link to nothing: mkdir and open said only "File
    exists" (after an evaluation's whole work, for evaluate.py's out=), train.py that another run took the folder."""
    for link in (p for p in [path, *path.parents] if p.is_symlink() and not p.exists()):
        raise ValueError(
            f"{given}={path}: {link} is a link to {os.readlink(link)}, which does not exist; make what it points "
            f"to, or choose another {given}="
        )


def check_writable_file(path: Path) -> None:
    """A one-line error now, before the work, when `path` exists or cannot be written: its folder is made and a
    scratch file is written and removed there (a real test, also for root on a read-only or full disk)."""
    refuse_a_dangling_link(path, "out")
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose another out= (results are never overwritten)")
    # mkdir below a file would say only 'File exists' or 'Not a directory'.
    blocker = next((folder for folder in path.parents if folder.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ValueError(f"cannot write {path}: {blocker} is a file, not a folder")
    # The folders made for the probe go again: a run refused later must not leave empty ones (write_json makes them).
    made = [folder for folder in [path.parent, *path.parent.parents] if not folder.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe") as probe:
            probe.write(b"0" * 4096)
            probe.flush()
    except OSError as error:
        raise ValueError(f"cannot write {path}: {error.strerror or error}") from error
    finally:
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):  # not empty (another process wrote there), or never made
                folder.rmdir()


def write_json(data: dict[str, Any], path: Path, or_next_free: bool = False) -> Path:
    """Write `data` to path whole or not at all, never over an existing file; returns where it went. If that
    fails, the result is printed to stdout first, so that what was computed is not lost, then the failure is one
    line. `or_next_free`: a name the program chose (not the user) that another run took meanwhile moves on to
    path_2, … (two evaluations of one run's checkpoints side by side both chose metrics.json)."""
    text = json.dumps(data, indent=2)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                atomic_write_text(path, text, exclusive=True)
                return path
            except FileExistsError:
                if not or_next_free:
                    raise
                path = first_free(path)
    except NoSpaceLeft as error:
        print(text, file=sys.stdout, flush=True)
        raise NoSpaceLeft(path, "; the result is printed above") from error
    except OSError as error:
        print(text, file=sys.stdout, flush=True)
        raise ValueError(
            f"could not write {path}: {error.strerror or error}; the result is printed above"
        ) from error
