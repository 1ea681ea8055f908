"""A run that ends before it is done: a fresh run's folder given back when the run is refused or stopped before
anything worth keeping (a refused run leaves nothing behind), and the note a stop's one line ends with (what the run
kept, how to go on)."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from ..cluster.stop_signal import StoppedBySignal
from ..compat import before_the_launcher_kills_this_process
from ..tracking.wandb_logger import finish_wandb_run
from ..training.other_processes import other_process_failed
from ..training.resume_advice import resume_advice
from .folder import has_checkpoints, has_logged, release
from .resume import LAST

# What stops a run at once: SIGTERM outside the training loop (CheckpointOnSignal saves within it), Ctrl-C.
STOPS = (StoppedBySignal, KeyboardInterrupt)


@contextlib.contextmanager
def released_if_refused(
    output_dir: Path, fresh: bool, refusals: tuple[type[BaseException], ...]
) -> Iterator[None]:
    """Re-raise one of `refusals` (a user error) or a stop; first, for a fresh run that wrote no checkpoint and
    logged nothing, remove what it wrote (a run that trained and failed, out of memory at step 3, keeps its logs
    and grids; a bug's traceback stays in its train.log)."""
    try:
        yield
    except BaseException as error:
        if (
            isinstance(error, (*refusals, *STOPS))
            and fresh
            and not has_checkpoints(output_dir)
            and not has_logged(output_dir)
        ):
            finish_wandb_run(failed=True)  # W&B writes into the folder until its run is closed
            release(output_dir)
            if isinstance(error, STOPS):
                error.add_note("nothing was trained (its run folder was given back)")
        raise


@contextlib.contextmanager
def released_if_another_process_ends_it(output_dir: Path, fresh: bool) -> Iterator[None]:
    """Lightning kills rank 0 at once (exit 137) when a process it started ends with an error while rank 0 waits
    where nothing notices (a stop reaching that process before it joined the process group): say which one and how
    in one line first, and give a fresh run's folder back as a refusal does (it trained nothing). Before, the folder
    stayed claimed, and the same command was refused as "a run that wrote no checkpoint"."""

    def before_the_kill(ended: dict[int, int]) -> None:
        if not ended:
            return
        line = str(other_process_failed(ended))
        if fresh and not has_checkpoints(output_dir) and not has_logged(output_dir):
            release(output_dir)
            line += " before the run saved or logged anything (its run folder was given back)"
        print(f"error: {line}", file=sys.stderr, flush=True)

    with before_the_launcher_kills_this_process(before_the_kill):
        yield


@contextlib.contextmanager
def launch_forgotten_if_refused(
    launch_files: Path | None, trained: Callable[[], bool], refusals: tuple[type[BaseException], ...]
) -> Iterator[None]:
    """Re-raise; first, for a resume refused before its first step, remove the files Hydra wrote for this launch
    (`launch_files`, its .hydra/resumed_step_<step>/): the next plain resume starts from the overrides of the
    launch before. Before, a refused override (data.captions=files on digits) was taken up by every later resume,
    which was then refused in turn. A stop keeps them: its overrides were meant, and the same command goes on."""
    try:
        yield
    except BaseException as error:
        if launch_files is not None and isinstance(error, refusals) and not trained():
            shutil.rmtree(launch_files, ignore_errors=True)
        raise


@contextlib.contextmanager
def noted_if_stopped(run_dir: Path, resume: Path | None, trained: Callable[[], bool]) -> Iterator[None]:
    """End a stop's one line with what the run kept and how to go on, where nothing on the way (a checkpoint
    written, the folder given back) noted it; `trained`: whether this process took a step."""
    try:
        yield
    except STOPS as stop:
        if not getattr(stop, "__notes__", None):
            stop.add_note(what_a_stop_kept(run_dir, resume, trained()))
        raise


def what_a_stop_kept(run_dir: Path, resume: Path | None, trained: bool) -> str:
    if resume is not None and not trained:
        # Its own run's checkpoint: into this folder again; another run's: the same command again (a new folder).
        own = resume.resolve().parent.parent == run_dir.resolve()
        return f"{resume} is as it was: {resume_advice(resume) if own else f'resume with ckpt_path={resume}'}"
    if not has_checkpoints(run_dir):
        return "no checkpoint had been written: its steps are lost" if trained else "nothing was trained"
    return f"the steps since its last checkpoint were not saved: {resume_advice(run_dir / LAST)}"
