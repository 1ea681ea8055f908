"""Read an offline W&B run's records from disk (no network, no wandb API): what tests check W&B logging with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from difflab.runlogs import wandb_history
from difflab.runlogs import wandb_records as _records


def wandb_records(run_dir: Path):
    """The run's records, waiting (up to a minute) for W&B's background writer to finish the file."""
    return _records(run_dir, timeout=60.0)


def history_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Every logged history row of the run as {key: value}, in order."""
    return wandb_history(run_dir, timeout=60.0)
