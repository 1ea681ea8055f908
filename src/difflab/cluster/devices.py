"""Devices and nodes, checked before the Trainer is built: each problem is one line instead of a hang or a
confusing message from Lightning; the device and CPU threads a run asks for."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger("difflab")


def _requested(devices: Any) -> tuple[int, int] | None:
    """(how many, highest index + 1) of a `devices` value; None for 'auto' / -1 (whatever there is)."""
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1", ""):
            return None
        if "," in text or text.startswith("["):
            devices = [int(i) for i in text.strip("[]").split(",") if i.strip()]
        else:
            devices = int(text)
    if isinstance(devices, int):
        return None if devices < 0 else (devices, devices)
    indices = [int(i) for i in devices]
    return (len(indices), max(indices) + 1) if indices else (0, 0)


def check_devices(trainer: Mapping[str, Any]) -> None:
    """GPUs asked for must be visible to torch (per node: trainer.devices counts the devices of one node)."""
    accelerator = str(trainer["accelerator"]).lower()
    if accelerator not in ("gpu", "cuda"):
        return
    import torch

    if accelerator == "gpu" and torch.backends.mps.is_available():
        return  # Apple GPU
    count = torch.cuda.device_count()
    if count == 0:
        raise ValueError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU that torch can see "
            f"(CUDA_VISIBLE_DEVICES, drivers); use trainer=cpu or trainer.accelerator=auto"
        )
    requested = _requested(trainer.get("devices"))
    if requested is not None and requested[1] > count:
        raise ValueError(
            f"trainer.devices={trainer.get('devices')} asks for more GPUs than this machine has ({count}); "
            f"use trainer.devices={count} or fewer"
        )


def check_nodes(trainer: Mapping[str, Any]) -> None:
    """num_nodes > 1 needs something that starts the other nodes; without it Lightning waits for them forever."""
    nodes = int(trainer["num_nodes"])
    started_elsewhere = ("SLURM_NTASKS", "MASTER_ADDR", "NODE_RANK", "WORLD_SIZE")
    if nodes > 1 and not any(var in os.environ for var in started_elsewhere):
        raise ValueError(
            f"trainer.num_nodes={nodes} but nothing starts the other nodes: use -m hydra/launcher=slurm "
            "trainer=slurm, or torchrun / MASTER_ADDR and NODE_RANK on every node; on one machine use num_nodes=1"
        )


def check_matches_started_processes(trainer: Mapping[str, Any]) -> None:
    """The processes a launcher such as torchrun started (WORLD_SIZE, LOCAL_WORLD_SIZE per node) against the ones
    the Trainer counts: with fewer (trainer.devices left at 1) Lightning starts no DDP, and each process trained the
    whole run on its own, one after the other, into the one run folder."""
    world = os.environ.get("WORLD_SIZE", "")
    if not world.isdigit() or int(world) <= 1:
        return  # one process
    try:
        devices = trainer.get("devices")
    except Exception:  # trainer=slurm's ${hydra:launcher…}, resolved only inside a SLURM job: checked there
        return
    requested = None if devices is None else _requested(devices)
    if requested is None:
        return  # devices=auto / -1: Lightning takes what the launcher gives; unset: check_trainer says so
    world_size, nodes = int(world), int(trainer["num_nodes"])
    if requested[0] * nodes == world_size:
        return
    local = os.environ.get("LOCAL_WORLD_SIZE", "")
    per_node = int(local) if local.isdigit() and int(local) > 0 else world_size
    wanted = f"trainer.devices={per_node}"
    if world_size // per_node != nodes:
        wanted += f" trainer.num_nodes={world_size // per_node}"
    raise ValueError(
        f"torchrun started {world_size} processes (WORLD_SIZE={world_size}) but trainer.devices="
        f"{devices} × trainer.num_nodes={nodes} makes {requested[0] * nodes}: each process would "
        f"train the whole run on its own; give {wanted} (torchrun's --nproc_per_node)"
    )


def check_trainer(trainer: Mapping[str, Any], slurm_launcher: Mapping[str, Any] | None = None) -> None:
    """All device checks, before the Trainer is built; `slurm_launcher`: the SLURM launcher's settings when jobs
    are submitted by one (its tasks_per_node and nodes are what the job gets)."""
    if trainer.get("devices") is None:
        raise ValueError(
            "trainer.devices is not set: trainer=slurm reads it from hydra/launcher=slurm; add "
            "`-m hydra/launcher=slurm` (or set trainer.devices)"
        )
    check_sampler_setting(trainer)
    if slurm_launcher is not None:
        check_matches_launcher(trainer, slurm_launcher)
    check_nodes(trainer)
    check_devices(trainer)
    warn_if_more_cpu_processes_than_cores(trainer)


def warn_if_more_cpu_processes_than_cores(trainer: Mapping[str, Any]) -> None:
    """On the CPU trainer.devices counts processes: more than the machine has cores share them, each far slower
    (trainer=cpu trainer.devices=64 on 2 cores spent minutes starting 64 processes before training a step)."""
    accelerator = str(trainer["accelerator"]).lower()
    if accelerator == "auto":
        import torch

        accelerator = "gpu" if torch.cuda.is_available() or torch.backends.mps.is_available() else "cpu"
    if accelerator != "cpu":
        return
    requested, cores = _requested(trainer.get("devices")), os.cpu_count() or 1
    if requested is not None and requested[0] > cores:
        log.warning(
            "trainer.devices=%s starts %d CPU processes on a machine with %d cores: they share the cores, each "
            "far slower; use trainer.devices=%d or fewer",
            trainer.get("devices"),
            requested[0],
            cores,
            cores,
        )


def check_matches_launcher(trainer: Mapping[str, Any], slurm_launcher: Mapping[str, Any]) -> None:
    """trainer.devices and trainer.num_nodes must be what the SLURM launcher gives each job."""
    pairs = [
        ("trainer.devices", trainer.get("devices"), "tasks_per_node", slurm_launcher.get("tasks_per_node")),
        ("trainer.num_nodes", trainer.get("num_nodes"), "nodes", slurm_launcher.get("nodes")),
    ]
    for key, value, launcher_key, launcher_value in pairs:
        if launcher_value is not None and str(value) != str(launcher_value):
            # trainer=slurm is DDP: offered for another strategy (trainer=fsdp), it would swap it without a word.
            strategy = trainer.get("strategy")
            # Worded for a trainer=slurm whose own key was overridden too: before, "use trainer=slurm", already given.
            fix = (
                f"use trainer=slurm without a {key}= of its own (it reads both from the launcher), or give "
                f"{key}={launcher_value}"
                if strategy in (None, "ddp")
                else f"give {key}={launcher_value} (trainer=slurm would train with DDP instead)"
            )
            raise ValueError(
                f"{key}={value} but hydra.launcher.{launcher_key}={launcher_value}: Lightning would wait for ranks "
                f"that never start; {fix}"
            )


def check_sampler_setting(trainer: Mapping[str, Any]) -> None:
    """difflab's train sampler deals the data out to the ranks itself; a DistributedSampler would do it again."""
    if trainer.get("use_distributed_sampler"):
        raise ValueError(
            "trainer.use_distributed_sampler=true would shard the data twice: difflab's sampler already gives "
            "each rank its share (and resumes mid-epoch); keep it false"
        )


def pick_device(name: str) -> torch.device:
    """'auto' → CUDA when available, else CPU; anything else as given, once this machine is known to have it (a
    one-line ValueError, before the model is read, instead of torch's failure while moving it)."""
    import torch  # only once a run needs a device: the cluster checks run before torch loads

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device={name} is not a device: use auto, cpu, cuda or cuda:<index>") from error
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device={name}: this machine has no CUDA GPU; use device=auto or device=cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device={name}: this machine has {count} CUDA GPUs (cuda:0 to cuda:{count - 1})"
            )
    elif device.type == "meta":
        raise ValueError(f"device={name} holds no values (shapes only): use device=auto, cpu or cuda")
    elif device.type != "cpu":
        # A type with no availability check this torch knows of (meta, xla, hpu, vulkan) is refused too: before,
        # torch's own error came later, in a traceback (xla: "PyTorch is not linked with support"; meta: at the
        # first .item() of sampling).
        backends = (getattr(torch.backends, device.type, None), getattr(torch, device.type, None))
        checks = [
            b.is_available for b in backends if b is not None and callable(getattr(b, "is_available", None))
        ]
        if not checks or not checks[0]():
            raise ValueError(
                f"device={name}: this machine has no {device.type} device; use device=auto, cpu or cuda"
            )
    return device


def set_cpu_threads(cpu_threads: int | str | None) -> None:
    """cpu_threads=N sets torch's intra-op threads (null or auto leave them: see generation.threads)."""
    from ..diffusion.auto_batch import AUTO
    from ..diffusion.cpu_threads import set_thread_count

    if cpu_threads not in (None, AUTO):
        set_thread_count(int(cpu_threads))
