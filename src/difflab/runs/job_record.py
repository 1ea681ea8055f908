"""The run folders a SLURM job started, by command, so that the job SLURM requeues (its batch script run again from
the top) goes back into them and resumes: one JSON line per run in outputs/<task>/slurm/<job id>.runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .folder import existing_run_files

log = logging.getLogger("difflab")


def job_record(root: str | Path, task: str, job: str) -> Path:
    """Where job `job` lists the runs of `task` it started."""
    return Path(root) / "outputs" / task / "slurm" / f"{job}.runs"


def remember_run(record: Path, command: list[str], run_dir: Path) -> None:
    """Add the run `command` started in `run_dir` to the job's record. A record that cannot be written costs only
    the resume after a requeue, so it is a warning, not the run."""
    line = json.dumps({"command": command, "run": str(run_dir.resolve())}) + "\n"
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        with open(
            record, "a", encoding="utf-8"
        ) as file:  # one short append: whole lines beside another run's
            file.write(line)
    except OSError as error:
        log.warning(
            "could not record this run in %s (%s): if SLURM requeues the job, it starts again in a new folder",
            record,
            error.strerror or error,
        )


def earlier_run(record: Path, command: list[str]) -> Path | None:
    """The folder of the last run the job started with `command` that still holds a run (None: no such run)."""
    try:
        lines = record.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut short by a full disk or a kill
            continue
        if isinstance(entry, dict) and entry.get("command") == command:
            run = Path(str(entry.get("run")))
            if existing_run_files(run):
                return run
    return None
