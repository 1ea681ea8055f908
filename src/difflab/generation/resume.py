"""Finishing a sample set a stopped sample.py left (resume=true, or a later attempt of a job its launcher
restarts): what the set was started with is recorded beside it while it is unfinished, its batches already on
disk are kept, and only the others are made. Sample i depends only on (seed, i) and the batches are the ones the
set was started with, so the finished set is the one a run never stopped writes, bit for bit."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..diffusion.auto_batch import AUTO
from ..io.atomic import atomic_write_text
from ..io.results import IN_USE, OutputFolder
from ..io.write_images import png_name
from .request import GenerationRequest
from .set_identity import changed_setting

log = logging.getLogger("difflab")

RECORD = ".difflab-resume.json"  # beside an unfinished set: what it was started with


@dataclass(frozen=True)
class ResumePlan:
    """How a set is made: whole (batch_size None), or continued with the batch size (and CPU threads, when it
    chose them) it was started with, its batches `done` (batch k: images k·batch_size …) read back from disk and
    the others made."""

    count: int
    batch_size: int | None = None
    done: frozenset[int] = frozenset()
    cpu_threads: int | None = None

    @property
    def batches(self) -> int:
        return 0 if self.batch_size is None else math.ceil(self.count / self.batch_size)

    def span(self, batch: int) -> range:
        """The indices of batch `batch` (of a continued set)."""
        assert self.batch_size is not None
        return range(batch * self.batch_size, min(self.count, (batch + 1) * self.batch_size))

    @property
    def on_disk(self) -> int:
        return sum(len(self.span(k)) for k in self.done)

    def applied(self, request: GenerationRequest) -> GenerationRequest:
        """`request` cut to the images still to make, in the batches the set was started with; a batch size the
        command gives (a number, not auto) wins, as cpu_threads=N and OMP_NUM_THREADS do: a job requeued onto a
        smaller GPU can finish its set in smaller batches (resume_line says what that changes)."""
        if self.batch_size is None:
            return request
        missing = [
            request.indices[i] for k in range(self.batches) if k not in self.done for i in self.span(k)
        ]
        batch_size = request.batch_size if isinstance(request.batch_size, int) else self.batch_size
        # auto chose (or measured) them then: the same now
        chosen = request.cpu_threads in (None, AUTO) and not os.environ.get("OMP_NUM_THREADS")
        chosen = chosen and self.cpu_threads is not None
        threads = self.cpu_threads if chosen else request.cpu_threads
        return replace(request, indices=missing, batch_size=batch_size, cpu_threads=threads)

    def resume_line(self, out: Path, applied: GenerationRequest) -> tuple[Any, ...]:
        """The log line (format and values) of a continued set, `applied` being applied()'s request."""
        made, batch = len(applied.indices), applied.batch_size
        text = "resuming %s: %d of %d images are on disk; making the other %d in batches of %d, %s"
        how = "as it was started"
        if batch != self.batch_size:
            how = f"not {self.batch_size} as it was started: each image still starts from its own noise, but "
            how += "may differ from an unstopped run's in rounding"
        return text, out, self.on_disk, self.count, made, batch, how

    def in_index_order(
        self, made: Iterator[Tensor], read_back: Callable[[int, int], Tensor]
    ) -> Iterator[tuple[Tensor, bool]]:
        """Every image of the set in index order, as (images, on disk): the batches done read back by
        read_back(first, count), the others taken from `made` (the applied request's images, in order)."""
        if self.batch_size is None:
            yield from ((images, False) for images in made)
            return
        waiting = torch.empty(0)  # images made and not handed on yet
        for k in range(self.batches):
            span = self.span(k)
            if k in self.done:
                yield read_back(span.start, len(span)), True
                continue
            while len(waiting) < len(span):
                waiting = torch.cat([waiting, next(made)]) if len(waiting) else next(made)
            yield waiting[: len(span)], False
            waiting = waiting[len(span) :]


def plan_for(folder: OutputFolder, identity: dict[str, Any], count: int, asked: bool) -> ResumePlan:
    """How to make a set of `count` images in `folder`. A folder a stopped run left (folder.continued) whose
    record matches `identity` is continued from its batches on disk; one whose record differs is refused in one
    line when a user asked to resume (`asked`), and emptied and made anew when a launcher restarted the job that
    left it (its own earlier attempt, with the same command: the checkpoint changed in between, or it was killed
    before it could record anything)."""
    if not folder.continued:
        return ResumePlan(count)
    out = folder.path
    started = _read_record(out)
    problem = _difference(started, identity, count)
    if problem is None:
        started_plan = ResumePlan(count, started["batch_size"], cpu_threads=started.get("cpu_threads"))
        plan = replace(started_plan, done=_batches_on_disk(out, started_plan))
        kept = {out / "images" / png_name(i, count) for k in plan.done for i in plan.span(k)}
        _clear(out, keep={out / RECORD, *kept})
        return plan
    if asked:
        raise ValueError(f"cannot resume {out}: {problem}")
    log.info("%s: what an earlier attempt of this job left there is removed (%s); writing anew", out, problem)
    _clear(out, keep=set())
    return ResumePlan(count)


def record(
    folder: Path, identity: dict[str, Any], plan: ResumePlan, batch_size: int, cpu_threads: int | None
) -> None:
    """Write what a new set is started with beside it (a continued set has it already)."""
    if plan.batch_size is None:
        started = {
            "count": plan.count,
            "batch_size": batch_size,
            "cpu_threads": cpu_threads,
            "identity": identity,
        }
        atomic_write_text(folder / RECORD, json.dumps(started, indent=2))


def finished(folder: Path) -> None:
    """The set is whole: its record goes (the folder now reads as any finished one)."""
    (folder / RECORD).unlink(missing_ok=True)


def _read_record(folder: Path) -> dict[str, Any] | None:
    try:
        started = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return started if isinstance(started, dict) else None


def _difference(started: dict[str, Any] | None, identity: dict[str, Any], count: int) -> str | None:
    """Why a set started as `started` cannot be continued by this command (None: it can)."""
    if started is None or not isinstance(started.get("identity"), dict):
        return f"it holds no readable record ({RECORD}) of what it was started with"
    changed = changed_setting(started["identity"], identity)
    if changed is not None:
        return f"{changed}; resume with the settings it was started with"
    threads = started.get("cpu_threads")
    # A batch size or thread count below 1 (a hand edit) is damage: before, -1 emptied images/ on the way to a
    # traceback, and 0 divided by zero.
    threads_damaged = threads is not None and not _a_count(threads)
    if started.get("count") != count or not _a_count(started.get("batch_size")) or threads_damaged:
        return f"its record ({RECORD}) is damaged"
    return None


def _a_count(value: Any) -> bool:
    """Whether a record's value is a whole number of at least 1 (JSON's true is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _batches_on_disk(folder: Path, plan: ResumePlan) -> frozenset[int]:
    """The batches of `plan` every PNG of which is in folder/images."""
    on_disk = {path.name for path in (folder / "images").glob("*.png")}
    spans = ((k, plan.span(k)) for k in range(plan.batches))
    return frozenset(k for k, span in spans if all(png_name(i, plan.count) in on_disk for i in span))


def _clear(folder: Path, keep: set[Path]) -> None:
    """Remove from `folder` all but its IN_USE mark and `keep`: a stopped run's grid, settings, unfinished
    batches and temp files."""
    for path in sorted(folder.rglob("*"), reverse=True):  # a folder's entries before the folder
        if path in keep or path == folder / IN_USE:
            continue
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        else:
            path.unlink()
