"""The metrics file every train run writes beside itself, `<run>/metrics.jsonl`, and its reader: one JSON object
per line, `{"step": 120, "train/loss": 0.081, …}`, whichever loggers the run had (training.metrics_file writes it).
Plain JSON lines, so that pandas (`read_json(lines=True)`), jq or a notebook read it as well as compare does."""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
NOT_METRICS = ("step", "epoch")  # the keys of a line that say where it was logged, not what

Series = dict[str, list[tuple[int, float]]]

log = logging.getLogger("difflab")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The objects of a metrics file, in order. A line that is not one (a write cut short by a kill, bytes that
    are no UTF-8 text) is skipped with a warning naming it: before, such bytes stopped compare and a resume with
    the codec's words alone."""
    rows = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            log.warning("skipping line %d of %s: not a JSON object", number, path)
    return rows


def run_series(run: Path) -> Series:
    """{metric: [(step, value), …]} of `<run>/metrics.jsonl`, finite values only, by step; a step logged twice
    keeps its last value. Empty when the folder holds no metrics file."""
    path = Path(run) / METRICS_FILE
    if not path.is_file():
        return {}
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for row in read_rows(path):
        step = row.get("step")
        if not isinstance(step, int):
            continue
        for key, value in row.items():
            if key not in NOT_METRICS and isinstance(value, int | float) and math.isfinite(value):
                out[key][step] = float(value)
    return {key: sorted(points.items()) for key, points in out.items()}
