"""Cluster concerns in one place: device and node checks before the Trainer is built, the Hydra launcher
check before anything is submitted, which process is rank 0 or a requeued job, and putting a preempted SLURM
job back in the queue. Each problem is one line and exit 2."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:  # torch and Lightning load where a run needs them, not when Hydra builds CheckLauncher
    from lightning.pytorch.loggers import Logger

    from ..training.preemption import Preempted

log = logging.getLogger("difflab")


def refuse(message: str) -> NoReturn:
    """Print `error: message` and exit 2 from a Hydra callback: Hydra turns an Exception raised in a callback
    into a warning and carries on, but SystemExit is not an Exception."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


# --- which process this is ---------------------------------------------------------------------------------


def is_secondary_rank() -> bool:
    """True in a DDP process other than global rank 0: Lightning's children (LOCAL_RANK), other nodes
    (NODE_RANK) and SLURM tasks (SLURM_PROCID) all join the run folder rank 0 has just created."""
    return any(os.environ.get(var, "0") != "0" for var in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "RANK"))


def is_requeued_job() -> bool:
    """True where a last.ckpt in the run folder can only be this job's own, written before a requeue: a SLURM
    job SLURM has restarted (SLURM_RESTART_COUNT > 0), or any job submitit launched (SUBMITIT_EXECUTOR is set;
    submitit reruns a requeued job with the same overrides in the same folder, locally too)."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0").strip()
    return restarts not in ("", "0") or bool(os.environ.get("SUBMITIT_EXECUTOR"))


def slurm_job_id() -> str | None:
    """<array job>_<task> for an array task, else SLURM_JOB_ID; None outside SLURM."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID") or None


# --- devices and nodes, before the Trainer is built ---------------------------------------------------------


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


# --- the Hydra launcher, before anything is submitted --------------------------------------------------------


def _launcher_name(config: DictConfig) -> str:
    return str(OmegaConf.select(config, "hydra.runtime.choices.hydra/launcher", default=None) or "")


class CheckLauncher(Callback):
    """on_multirun_start runs before the sweeper instantiates the launcher (where a ??? would raise)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        missing = sorted(OmegaConf.missing_keys(launcher))  # full paths, e.g. hydra.launcher.partition
        if missing:
            keys = ", ".join(missing)
            example = " ".join(f"{key}=<value>" for key in missing)
            refuse(f"hydra/launcher={_launcher_name(config)} needs {keys}: add {example} to the command")
        if "SlurmLauncher" in str(launcher.get("_target_", "")) and not shutil.which("sbatch"):
            refuse(
                f"hydra/launcher={_launcher_name(config)} submits with sbatch, which is not on this machine's "
                "PATH: launch from a SLURM login node (or use hydra/launcher=submitit_local to try it here)"
            )

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "submitit" in str(config.hydra.launcher.get("_target_", "")):
            refuse(
                f"hydra/launcher={_launcher_name(config)} submits jobs only in multirun mode: add -m "
                "(without it the run would start here)"
            )


# --- requeue after a checkpoint on the preemption signal ----------------------------------------------------


def _is_submitit_handler(handler: object) -> bool:
    owner = getattr(handler, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("submitit")


def requeue(stop: Preempted, is_global_zero: bool, loggers: list[Logger]) -> None:
    """Requeue this job and end the process (every rank). The W&B run is marked as preempting (not failed): the
    requeued job resumes it under the same id."""
    from lightning.pytorch.loggers import WandbLogger

    if is_global_zero:
        for logger in loggers:
            if isinstance(logger, WandbLogger) and logger.experiment is not None:
                logger.experiment.mark_preempting()
    if _is_submitit_handler(stop.previous_handler):
        # submitit's handler: on rank 0 it records the resubmission, runs `scontrol requeue` and exits; on the
        # other ranks it only logs, and they leave below.
        stop.previous_handler(stop.signum, None)
    elif is_global_zero and (job_id := slurm_job_id()) is not None and re.fullmatch(r"[0-9_]+", job_id):
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
        if result.returncode == 0:
            log.warning("requeued SLURM job %s; it resumes from %s", job_id, stop.path)
        else:
            log.error("scontrol requeue %s failed: %s", job_id, (result.stderr or result.stdout).strip())
    elif is_global_zero:
        print(f"{stop}; resume with ckpt_path={stop.path}", file=sys.stderr)
    raise stop
