"""The processes a launcher started for one sampling job (torchrun or any launcher that sets torch.distributed's
env:// variables, or srun): which one this is, the device it takes, and the process group they share. Training
does not use this (Lightning's strategies start and join its processes) but for end_process_groups."""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from .jobs import srun_step
from .torchrun import own_process_group_store

T = TypeVar("T")


@dataclass(frozen=True)
class Processes:
    """This process's place among the `world` processes of one job (rank 0 writes the results)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0  # its index on its machine: the GPU it takes
    meet_at: str = "env://"  # where the process group's store is (torch.distributed's init_method)

    @property
    def main(self) -> bool:
        return self.rank == 0


ONE_PROCESS = Processes()


def started_processes() -> Processes:
    """This process's place as the launcher's environment says (WORLD_SIZE, RANK, LOCAL_RANK); one process when
    WORLD_SIZE is unset or 1."""
    world = _whole_env("WORLD_SIZE", 1)
    if world <= 1:
        return srun_tasks() if srun_step() is not None else ONE_PROCESS
    for needed in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if needed not in os.environ:
            raise ValueError(
                f"WORLD_SIZE={world} but {needed} is not set: start the processes with torchrun "
                f"(torchrun --nproc_per_node=<GPUs> {Path(sys.argv[0]).name} …), which sets every variable they need"
            )
    rank = _whole_env("RANK", 0)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not a rank of WORLD_SIZE={world} processes (0 to {world - 1})")
    return Processes(rank, world, _whole_env("LOCAL_RANK", rank))


def srun_tasks() -> Processes:
    """The tasks of an srun step (`srun python sample.py …`, one task per GPU), which srun starts without
    torch.distributed's variables: their count, rank and index on their node from SLURM's, meeting on the step's
    first node at the port Lightning gives the job's training processes (15000 + the job id's last four digits;
    MASTER_PORT if set)."""
    world = _whole_env("SLURM_NTASKS", 1)
    if world <= 1:
        return ONE_PROCESS
    rank = _whole_env("SLURM_PROCID", 0)
    if not 0 <= rank < world:
        raise ValueError(f"SLURM_PROCID={rank} is not a task of SLURM_NTASKS={world} (0 to {world - 1})")
    from lightning.fabric.plugins.environments import SLURMEnvironment  # its reading of SLURM's node lists

    nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_NODELIST") or "127.0.0.1"
    first_node = SLURMEnvironment.resolve_root_node_address(nodes)
    job = os.environ.get("SLURM_JOB_ID", "")
    port = _whole_env("MASTER_PORT", 15000 + (int(job[-4:]) if job[-4:].isdigit() else 0))
    return Processes(rank, world, _whole_env("SLURM_LOCALID", 0), meet_at=f"tcp://{first_node}:{port}")


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
    dist.init_process_group(
        backend,
        init_method=processes.meet_at,
        rank=processes.rank,
        world_size=processes.world,
        timeout=datetime.timedelta(minutes=30),
    )
    try:
        check_one_command(processes)
        yield
    finally:
        end_process_groups()


def end_process_groups() -> None:
    """End this process's process groups, if it has any, while the interpreter is whole: destroyed, and freed with
    what still held them (torch's DTensor caches keep the device mesh FSDP2 trained on; difflab.compat says why)."""
    import gc

    import torch.distributed as dist

    from ..compat import clear_dtensor_caches

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    clear_dtensor_caches()
    gc.collect()


def from_rank_0(value: T, processes: Processes) -> T:
    """Rank 0's `value` on every process (what the others pass is not read)."""
    if processes.world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_one_command(processes: Processes) -> None:
    """A one-line error on every process when they were not all started with the same arguments: rank 0 writes
    what rank 0 was asked for, so another seed or out= given to one task (srun running a command per task) would
    be silently ignored."""
    import torch.distributed as dist

    commands: list[list[str] | None] = [None] * processes.world
    dist.all_gather_object(commands, sys.argv[1:])
    for rank, command in enumerate(commands):
        if command != commands[0]:
            own = " ".join(a for a in command or [] if a not in (commands[0] or [])) or "fewer arguments"
            raise ValueError(
                f"process {rank} of {processes.world} was started with other arguments than process 0 ({own}): "
                "the processes share one command; start independent runs one process each (srun --ntasks=1)"
            )


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
