"""The processes a launcher started for one sampling job (torchrun, or srun / any launcher that sets
torch.distributed's env:// variables): which one this is, the device it takes, and the process group they share.
Training does not use this: Lightning's strategies start and join its processes."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .torchrun import own_process_group_store


@dataclass(frozen=True)
class Processes:
    """This process's place among the `world` processes of one job (rank 0 writes the results)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0  # its index on its machine: the GPU it takes

    @property
    def main(self) -> bool:
        return self.rank == 0


ONE_PROCESS = Processes()


def started_processes() -> Processes:
    """This process's place as the launcher's environment says (WORLD_SIZE, RANK, LOCAL_RANK); one process when
    WORLD_SIZE is unset or 1."""
    world = _whole_env("WORLD_SIZE", 1)
    if world <= 1:
        return ONE_PROCESS
    for needed in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if needed not in os.environ:
            raise ValueError(
                f"WORLD_SIZE={world} but {needed} is not set: start the processes with torchrun "
                "(torchrun --nproc_per_node=<GPUs> sample.py …), which sets every variable they need"
            )
    rank = _whole_env("RANK", 0)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not a rank of WORLD_SIZE={world} processes (0 to {world - 1})")
    return Processes(rank, world, _whole_env("LOCAL_RANK", rank))


def device_of(name: str, processes: Processes) -> str:
    """The device a process takes for device=`name`: one process, `name` itself; several, each its own GPU
    (cuda:LOCAL_RANK) for auto/cuda, or the CPU."""
    if processes.world == 1 or name == "cpu":
        return name
    if name == "auto":
        return f"cuda:{processes.local_rank}" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return f"cuda:{processes.local_rank}"
    raise ValueError(
        f"device={name} names one device for {processes.world} processes: use device=auto (or cuda), each "
        "process then takes the GPU of its LOCAL_RANK"
    )


@contextlib.contextmanager
def process_group(processes: Processes, device: torch.device) -> Iterator[None]:
    """The job's process group for the block (NCCL between GPUs, gloo between CPU processes), ended after it
    even on failure (an exit with the group still up can abort); one process runs the block as it is."""
    if processes.world == 1:
        yield
        return
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    own_process_group_store()  # a torchrun restart: not the process-group keys its first attempt left
    # A rank that fails ends the job through its launcher (torchrun stops the others); the timeout bounds a wait
    # that nothing ends, such as a rank stopped in a debugger.
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    try:
        yield
    finally:
        dist.destroy_process_group()


def _whole_env(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"{name}={text} is not a whole number (the launcher's process count or index)"
        ) from None
