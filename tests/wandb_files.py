"""Read an offline W&B run's records from disk (no network): how the tests check what reached W&B (run names,
groups, config, images, scores). difflab itself never reads these files: compare reads `<run>/metrics.jsonl`.

The `.wandb` file is W&B's private format (LevelDB-log framing around its internal protobuf records), which
W&B offers no reader for; a W&B release that changes it fails these tests, never a user's command.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def wandb_records(run_dir: Path, timeout: float = 60.0) -> list[Any]:
    """The protobuf records of the run's file, waiting (up to `timeout` s) until it holds the run's exit record:
    W&B's service writes it in the background, and on a busy machine finishes after the run has closed."""
    (path,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        records = list(_parse(path.read_bytes()))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() >= deadline:
            return records
        time.sleep(0.5)


def _parse(data: bytes) -> Iterator[Any]:
    """LevelDB-log framing: a 7-byte file header, then chunks (crc32, length, type) in 32 KiB blocks; type 1 is
    a whole record, 2/3/4 the first/middle/last part of one."""
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
    return [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
        for record in wandb_records(run_dir)
        if record.WhichOneof("record_type") == "history"
    ]
