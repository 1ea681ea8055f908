"""Read an offline W&B run's records from disk (no network, no wandb API): what tests check W&B logging with."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def wandb_records(run_dir: Path, timeout: float = 60.0) -> Iterator:
    """The protobuf records of an offline W&B run file (LevelDB-log framing: 7-byte header, then chunks of
    crc32, length, type in 32 KiB blocks; type 1 = whole record, 2/3/4 = first/middle/last part).

    W&B's service writes the file in the background; on a busy machine it can still be writing after
    wandb.finish() returns, so this waits (up to `timeout` s) until the file holds the run's exit record.
    """
    (path,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        records = list(_parse(path.read_bytes()))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            yield from records
            return
        time.sleep(0.5)


def _parse(data: bytes) -> Iterator:
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


def history_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Every logged history row of the run as {key: value}, in order."""
    rows = []
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows
