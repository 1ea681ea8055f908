"""Write `<run>/metrics.jsonl` in every run, whichever loggers are configured: the one file compare reads."""

from __future__ import annotations

import json
import math
import os
from argparse import Namespace
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from ..io.atomic import NoSpaceLeft, atomic_write_text, is_out_of_space
from ..runlogs import METRICS_FILE, read_rows


def _plain(value: Any) -> Any:
    """A logged value as JSON holds it: a number (a tensor's item), null for NaN or infinity."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricsFile(Logger):
    """A Lightning logger that appends `{"step": …, "<metric>": value, …}` to `<run_dir>/metrics.jsonl` for every
    log call, on rank 0. Each line is written and closed at once, so a killed run keeps every line before the
    kill (a line cut short is skipped by the reader, and the next write starts on a line of its own).

    A run resumed at step `resumed_at` first moves the lines of later steps (logged by a continuation that the
    resume abandons) to `metrics.superseded_at_step_<step>.jsonl` beside it, as resume does with later
    checkpoints: the file then holds the run's one history. A resume at the run's step limit (`final_again`) trains
    nothing and makes the final grid and scores again: the lines of that step are set aside too, so they are not
    logged twice.
    """

    def __init__(self, run_dir: str | Path, resumed_at: int | None = None, final_again: bool = False) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self.resumed_at = resumed_at
        self.final_again = final_again
        self._ready = False

    @property
    def name(self) -> str:
        return ""  # with version "", Lightning's default checkpoint folder stays <run_dir>/checkpoints

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.run_dir)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Nothing: the run's config is in .hydra/config.yaml and in every checkpoint."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if not self._ready:
            self._prepare()
            self._ready = True
        row = {"step": step, **{key: _plain(value) for key, value in metrics.items()}}
        append_whole(self.path, _lines([row]).encode())

    def _prepare(self) -> None:
        """Before this process's first line: a resume's later lines set aside, and the file ending with a whole
        line (one cut short by a kill stays alone on its line)."""
        if not self.path.is_file():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            return
        if self.resumed_at is not None:
            self._set_aside_after(self.resumed_at)
        if self.path.stat().st_size:
            with self.path.open("rb+") as file:
                file.seek(-1, os.SEEK_END)
                if file.read(1) != b"\n":
                    file.write(b"\n")

    def _set_aside_after(self, step: int) -> None:
        rows = read_rows(self.path)

        def later(row: dict[str, Any]) -> bool:
            # Lightning logs a training step's metrics at its 0-based index, so the first step after a checkpoint
            # at global step `step` logged its train/ line at `step` itself; a callback's line at `step` (an FID)
            # and the validation's (val/loss) score the checkpointed weights and stay. A resume at the limit
            # makes the final scores again, but not the validation.
            if not isinstance(row.get("step"), int):
                return False
            again = self.final_again and "val/loss" not in row
            at = row["step"] == step and (again or any(k.startswith("train/") for k in row))
            return row["step"] > step or at

        if not any(map(later, rows)):
            return
        aside, n = self.run_dir / f"metrics.superseded_at_step_{step:07d}.jsonl", 1
        while aside.exists():
            n += 1
            aside = self.run_dir / f"metrics.superseded_at_step_{step:07d}_{n}.jsonl"
        # The lines set aside are written first: a kill in between leaves them in both files, never in neither.
        atomic_write_text(aside, _lines(row for row in rows if later(row)), exclusive=True)
        atomic_write_text(self.path, _lines(row for row in rows if not later(row)))


def append_whole(path: Path, data: bytes) -> None:
    """Append `data` to `path`, or nothing: a write that fails part-way (a full disk) is cut back off, so the file
    never ends in half a line, and the error names the file (NoSpaceLeft for a full disk)."""
    with path.open("ab", buffering=0) as file:
        start = file.seek(0, os.SEEK_END)
        try:
            written = 0
            while written < len(data):
                written += file.write(data[written:]) or 0
        except OSError as error:
            file.truncate(start)
            if is_out_of_space(error):
                raise NoSpaceLeft(path) from error
            raise


def _lines(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)
