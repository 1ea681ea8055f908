"""Run by torchrun --max-restarts=1: rank 1 dies after its first attempt's all-reduce, and in the restarted attempt
rank 0 makes its process group a second late, so rank 1 reads whatever rank-0 address the store holds."""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist

from difflab.cluster.processes import process_group, started_processes

attempt, rank = int(os.environ["TORCHELASTIC_RESTART_COUNT"]), int(os.environ["RANK"])
if attempt == 1 and rank == 0:
    time.sleep(1)
with process_group(started_processes(), torch.device("cpu")):
    total = torch.ones(1)
    dist.all_reduce(total)
    print(f"attempt {attempt} rank {rank}: {total.item():.0f} processes", flush=True)
    if attempt == 0 and rank == 1:
        os._exit(3)  # a rank lost: the agent stops rank 0 and restarts both
