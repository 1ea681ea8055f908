"""Check the trainer's device settings before Lightning sees them: GPUs or nodes that do not exist, a trainer
that disagrees with the SLURM launcher, a DistributedSampler that would shard the data twice — one line each."""

from __future__ import annotations

import os
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


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


def check_devices(trainer: DictConfig) -> None:
    """GPUs asked for must be visible to torch (per node: trainer.devices counts the devices of one node)."""
    accelerator = str(trainer.get("accelerator") or "auto").lower()
    if accelerator not in ("gpu", "cuda"):
        return
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


def check_nodes(trainer: DictConfig) -> None:
    """num_nodes > 1 needs something that starts the other nodes; without it Lightning waits for them forever."""
    nodes = int(trainer.get("num_nodes") or 1)
    started_elsewhere = ("SLURM_NTASKS", "MASTER_ADDR", "NODE_RANK", "WORLD_SIZE")
    if nodes > 1 and not any(var in os.environ for var in started_elsewhere):
        raise ValueError(
            f"trainer.num_nodes={nodes} but nothing starts the other nodes: use -m hydra/launcher=slurm "
            "trainer=slurm, or torchrun / MASTER_ADDR and NODE_RANK on every node; on one machine use num_nodes=1"
        )


def check_sampler_setting(trainer: DictConfig) -> None:
    """difflab's train sampler deals the data out to the ranks itself; a DistributedSampler would do it again."""
    if trainer.get("use_distributed_sampler"):
        raise ValueError(
            "trainer.use_distributed_sampler=true would shard the data twice: difflab's sampler already gives "
            "each rank its share (and resumes mid-epoch); keep it false"
        )


def check_matches_launcher(trainer: DictConfig) -> None:
    """Under hydra/launcher=slurm, trainer.devices and trainer.num_nodes must be what the job was given."""
    if not HydraConfig.initialized():
        return
    launcher = HydraConfig.get().launcher
    if "SlurmLauncher" not in str(launcher.get("_target_", "")):
        return
    pairs = [
        (
            "trainer.devices",
            trainer.get("devices"),
            "hydra.launcher.tasks_per_node",
            launcher.get("tasks_per_node"),
        ),
        ("trainer.num_nodes", trainer.get("num_nodes"), "hydra.launcher.nodes", launcher.get("nodes")),
    ]
    for key, value, launcher_key, launcher_value in pairs:
        if launcher_value is not None and str(value) != str(launcher_value):
            raise ValueError(
                f"{key}={value} but {launcher_key}={launcher_value}: Lightning would wait for ranks that never "
                "start; use trainer=slurm, which reads both from the launcher"
            )


def check_trainer(trainer: DictConfig) -> None:
    """All device checks, before the Trainer is built."""
    if trainer.get("devices") is None:
        raise ValueError(
            "trainer.devices is not set: trainer=slurm reads it from hydra/launcher=slurm; add "
            "`-m hydra/launcher=slurm` (or set trainer.devices)"
        )
    check_sampler_setting(trainer)
    check_matches_launcher(trainer)
    check_nodes(trainer)
    check_devices(trainer)
