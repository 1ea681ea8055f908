"""A run folder belongs to one run: what marks one, and giving a fresh one back when its run is refused before
its first step (a refused run leaves nothing behind, as a refused sample.py leaves no out= folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

RUN_MARKERS = {"checkpoints", "samples", ".hydra", "wandb"}
# Everything a run writes into its folder; a user's own files in a folder they named are never touched.
RUN_ENTRIES = RUN_MARKERS | {"train.log", "csv", "tensorboard", "lightning_logs", "wandb_run_id"}


def existing_run_files(run_dir: Path) -> list[str]:
    """What in `run_dir` shows a previous run (checkpoints, samples, logs), if anything."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name in RUN_MARKERS)


def has_checkpoints(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("*.ckpt"))


def release(run_dir: Path) -> None:
    """Remove what a run wrote into `run_dir` (the folder too, when that leaves it empty)."""
    if not run_dir.is_dir():
        return
    for entry in run_dir.iterdir():
        if entry.name in RUN_ENTRIES:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    if not any(run_dir.iterdir()):
        run_dir.rmdir()
