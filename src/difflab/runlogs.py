"""Read what runs logged, from disk and offline: Lightning's CSV logs, TensorBoard event files and W&B offline
run files. Each reader gives {metric: [(step, value), …]} so runs logged either way compare alike."""

from __future__ import annotations

import csv
import json
import math
import struct
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Series = dict[str, list[tuple[int, float]]]


def csv_series(run: Path) -> Series:
    """Every metrics.csv under the run folder (a resumed run writes one per part), merged by step."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for path in sorted(run.rglob("metrics.csv")):
        for row in csv.DictReader(path.open()):
            step = row.get("step")
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in (None, "") and step not in (None, ""):
                    out[key][int(float(step))] = float(value)
    return {key: sorted(points.items()) for key, points in out.items()}


def tensorboard_series(run: Path) -> Series:
    """Scalars of every TensorBoard event file under the run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = defaultdict(dict)
    for path in sorted(run.rglob("events.out.tfevents.*")):
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags().get("scalars", []):
            for event in events.Scalars(tag):
                out[tag][int(event.step)] = float(event.value)
    return {key: sorted(points.items()) for key, points in out.items()}


def wandb_records(run_dir: Path, timeout: float = 0.0) -> Iterator[Any]:
    """The protobuf records of an offline W&B run file (LevelDB-log framing: 7-byte header, then chunks of
    crc32, length, type in 32 KiB blocks; type 1 = whole record, 2/3/4 = first/middle/last part).

    W&B's service writes the file in the background; with `timeout` this waits until the file holds the run's
    exit record (a run still being written, or one that has just finished on a busy machine).
    """
    (path,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        records = list(_parse(path.read_bytes()))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() >= deadline:
            yield from records
            return
        time.sleep(0.5)


def _parse(data: bytes) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2

    pos, pending, block = 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_history(run_dir: Path, timeout: float = 0.0) -> list[dict[str, Any]]:
    """Every logged history row of an offline W&B run as {key: value}, in order."""
    rows = []
    for record in wandb_records(run_dir, timeout):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def wandb_series(run: Path) -> Series:
    """Numeric history of every offline W&B run under the run folder, by trainer/global_step."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for run_dir in sorted(run.rglob("offline-run-*")):
        for row in wandb_history(run_dir):
            step = row.get("trainer/global_step", row.get("_step"))
            for key, value in row.items():
                if (
                    not key.startswith(("_", "trainer/"))
                    and isinstance(value, int | float)
                    and step is not None
                ):
                    out[key][int(step)] = float(value)
    return {key: sorted(points.items()) for key, points in out.items()}


def run_series(run: Path) -> Series:
    """What a run folder logged, from the first kind of log it holds: CSV, then TensorBoard, then W&B."""
    for reader in (csv_series, tensorboard_series, wandb_series):
        series = reader(run)
        if series:
            return {k: [(s, v) for s, v in points if math.isfinite(v)] for k, points in series.items()}
    return {}
