"""Turn the errors a user can cause into one clear line instead of a traceback; keep a sweep going past them."""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode

from ..cluster.stop_signal import StoppedBySignal, stop_signal_raises
from ..console_log import echo, to_log_files
from ..io.atomic import NoSpaceLeft, is_out_of_space, where_space_ran_out
from .sweep_stopped import note_job_started

T = TypeVar("T")
log = logging.getLogger("difflab")

# Errors that name a problem with the user's input (paths, sizes, configs); anything else is a bug
# and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, InstantiationException)


class SweepConfigError(ValueError):
    """A user error every job of a sweep would repeat (e.g. an optimized_metric no run logs): stops the sweep."""


class SweepJobFailed(CompactHydraException):
    """One job of a multirun failed on a user error. Hydra records it, runs the sweep's other jobs, then
    re-raises the first such failure and, this being a CompactHydraException, prints its line without a traceback
    (with Hydra's own "Error executing job with overrides" line before it and its HYDRA_FULL_ERROR hint after: Hydra
    1.3 prints those for every failure it re-raises) and exits 1."""


def root_cause(error: BaseException) -> BaseException:
    """The innermost cause of an error: Hydra wraps a constructor's ValueError in InstantiationException."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def one_line(error: BaseException) -> str:
    """The first line of the root cause's message (its type name when it has none), and the last note added to
    the error on its way up (where the work it stopped is kept)."""
    cause = root_cause(error)
    text = worker_message(str(cause).strip())
    line = text.splitlines()[0] if text else type(cause).__name__
    # The error itself, its root cause, or the error it was made from (an out-of-memory error said in one line).
    notes = (
        getattr(error, "__notes__", None)
        or getattr(cause, "__notes__", None)
        or getattr(error.__cause__, "__notes__", None)
    )
    return f"{line}; {notes[-1]}" if notes else line


def worker_message(text: str) -> str:
    """The message of an error a DataLoader worker raised, out of torch's wrapping ("Caught DataError in DataLoader
    worker process 0. Original Traceback …", whose first line says nothing); any other text as it is."""
    if not text.startswith("Caught ") or "\nOriginal Traceback" not in text:
        return text
    lines = text.splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith(" ")]
    raised = "\n".join(lines[frames[-1] + 1 :] if frames else lines[-1:]).strip()
    name, separator, message = raised.partition(": ")
    return message if separator and " " not in name else raised


def current_sweep_job() -> str | None:
    """`#<num> (<job folder>)` when running as a job of a Hydra multirun, else None."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return f"#{hydra_cfg.job.num} ({Path(str(hydra_cfg.sweep.dir)) / str(hydra_cfg.sweep.subdir)})"


# Whether this process's work began (an exit_if_stopped block was entered): a stop outside the work is said as
# one before it or after it (run.cli.launch).
_work = {"began": False}


def work_began() -> bool:
    """Whether an exit_if_stopped block (a script's work) was entered in this process."""
    return _work["began"]


@contextlib.contextmanager
def exit_if_stopped(
    script: str,
    unsaved: str = "nothing was written (what it had written was removed)",
    unless_handled: bool = False,
    signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP),
) -> Iterator[None]:
    """SIGTERM (a cluster's time limit, scancel), SIGHUP (the terminal it ran in closed) or Ctrl-C within the block
    ends the run with one line and exit 143, 129 or 130, once the block's own cleanup (an output folder's) has removed what it wrote, or noted where it
    kept it (else the line says `unsaved`). `signals`: those that stop it (SIGTERM, SIGHUP); `unless_handled`: a
    handler already set (submitit's) stays."""
    _work["began"] = True
    try:
        with stop_signal_raises(unless_handled, signals):
            yield
    except (StoppedBySignal, KeyboardInterrupt) as stop:
        how, code = (str(stop), stop.exit_code) if isinstance(stop, StoppedBySignal) else ("interrupted", 130)
        done = last_note(stop) or unsaved
        message = f"error: {script} {how}; {done}"
        echo(message, sys.stderr, logging.ERROR)
        sys.exit(code)


def last_note(stop: BaseException) -> str | None:
    """The last note of the stop, or of the error it cut short (a stop can land while an error is on its way up,
    after that error was noted with what it kept: torchrun's SIGTERM once a collective failed)."""
    error: BaseException | None = stop
    while error is not None:
        notes = getattr(error, "__notes__", None)
        if notes:
            return notes[-1]
        error = error.__context__
    return None


def left_to_rank_0(rank: int, does: str) -> str:
    """What a stop says on a rank other than 0 of several processes, which only generates: what was kept is rank 0's
    to say (a copy of rank 0's line, or "nothing was written", would be wrong on one of them)."""
    return f"rank {rank} only generates; rank 0 {does} and says what it kept"


def exit_on_user_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorator for entry points. A single run prints `error: <message>` and exits 2 on a user error. A job
    of a multirun prints `error: job #N (<job folder>): <message>` and fails only itself, so the sweep goes on
    with the next job (Hydra's launchers catch Exceptions, but sys.exit would end the whole sweep). The line, or
    a bug's traceback, is also kept in the run's log file."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> T:
        note_job_started()
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            if not isinstance(error, USER_ERRORS) and not is_out_of_space(error):
                job = current_sweep_job()
                if job is not None:  # a bug: show its traceback now, not only once the whole sweep has ended
                    log.exception("job %s failed", job)
                else:  # Hydra prints the traceback to the console; the run's log keeps it too
                    to_log_files("the run failed", logging.ERROR, exc_info=True)
                raise
            # A full disk met anywhere (a logger, a library's own write) is the one line NoSpaceLeft gives.
            full = (
                None if isinstance(error, USER_ERRORS) else where_space_ran_out(error) or "the output folder"
            )
            message = one_line(error if full is None else NoSpaceLeft(full))
            job = current_sweep_job()
            if job is None or isinstance(root_cause(error), SweepConfigError):
                echo(f"error: {message}", sys.stderr, logging.ERROR)
                sys.exit(2)
            echo(f"error: job {job}: {message}", sys.stderr, logging.ERROR)
            raise SweepJobFailed(f"error: job {job} failed: {message}") from error

    return wrapper
