"""The NaN check before a sharded (trainer=fsdp, state_dict_type=sharded) checkpoint is written reads each rank's
own shards and agrees across ranks in one all-reduce: a NaN in one rank's shard stops every rank, naming the
weight, and a clean save makes no collective per tensor (those per-tensor collectives let a gloo rank abort
mid-save in CI: 'Fatal Python error: Aborted', the other rank 'Connection closed by peer')."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = r"""
import json, sys
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor
import torch.distributed.tensor._dispatch as dispatch

from difflab.cluster.processes import end_process_groups
from difflab.training.finite import first_non_finite

rank, meet, out, nan_on = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
dist.init_process_group("gloo", init_method=f"file://{meet}", rank=rank, world_size=2)
mesh = init_device_mesh("cpu", (2,))
weights = {}
for i in range(20):
    full = torch.zeros(4, 3)
    if i == 7 and nan_on >= 0:
        full[2 * nan_on] = float("nan")  # rows 0-1 are rank 0's shard, rows 2-3 rank 1's
    weights[f"block{i}.weight"] = distribute_tensor(full, mesh, [Shard(0)])
calls = []
original = dispatch.redistribute_local_tensor
dispatch.redistribute_local_tensor = lambda *a, **k: calls.append(1) or original(*a, **k)
found = first_non_finite({"state_dict": weights})
json.dump({"found": found, "redistributions": len(calls)}, open(out, "w"))
del weights, mesh
end_process_groups()  # as a run ends them: destroyed and freed before the interpreter exits
"""


def check_on_two_ranks(tmp_path: Path, nan_on: int) -> list[dict]:
    outs = [tmp_path / f"rank{rank}.json" for rank in range(2)]
    meet = tmp_path / "meet"
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(rank), str(meet), str(outs[rank]), str(nan_on)])
        for rank in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    return [json.loads(out.read_text()) for out in outs]


@pytest.mark.parametrize("nan_on", [0, 1])
def test_a_nan_in_one_ranks_shard_is_named_on_every_rank(tmp_path, nan_on) -> None:
    results = check_on_two_ranks(tmp_path, nan_on)
    assert [r["found"] for r in results] == ["state_dict.block7.weight"] * 2


def test_clean_shards_pass_with_no_collective_per_tensor(tmp_path) -> None:
    results = check_on_two_ranks(tmp_path, nan_on=-1)
    assert [r["found"] for r in results] == [None, None]
    assert [r["redistributions"] for r in results] == [0, 0]
