"""What the cluster checks read from Hydra's config: the SLURM launcher a trainer must match (difflab.cluster
checks the devices and nodes with it: ranks, device checks, requeue), and the Hydra launcher before anything is
submitted. Each problem is one line and exit 2."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf


def exit_with_error(message: str) -> NoReturn:
    """Print `error: message` and exit 2 from a Hydra callback: Hydra turns an Exception raised in a callback
    into a warning and carries on, but SystemExit is not an Exception."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def slurm_launcher() -> DictConfig | None:
    """Hydra's launcher config when jobs go through hydra/launcher=slurm (None otherwise, and outside Hydra)."""
    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    return launcher if "SlurmLauncher" in str(launcher.get("_target_", "")) else None


# --- the Hydra launcher, before anything is submitted --------------------------------------------------------


def _launcher_name(config: DictConfig) -> str:
    return str(OmegaConf.select(config, "hydra.runtime.choices.hydra/launcher", default=None) or "")


def devices_asked(devices: Any, accelerator: Any) -> int:
    """How many devices trainer.devices asks for on this machine (-1: all of them, counted as 2)."""
    if OmegaConf.is_list(devices) or isinstance(devices, list | tuple):
        return len(devices)
    text = str(devices).strip()
    if text.lstrip("-").isdigit():
        return 2 if int(text) == -1 else int(text)
    if text == "auto":
        return _gpus_auto_takes(str(accelerator))
    return len([d for d in text.split(",") if d.strip()])


def _gpus_auto_takes(accelerator: str) -> int:
    """Lightning's devices=auto takes every visible CUDA GPU (accelerator auto or gpu), otherwise one device."""
    if accelerator not in ("auto", "gpu", "cuda"):
        return 1
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def refuse_relaunched_processes_in_a_sweep(config: DictConfig) -> None:
    """Lightning starts a run's other DDP or FSDP processes by running train.py again with its command line, which
    in a sweep is the whole sweep: the second process was refused (or ran other jobs) and Lightning then killed
    the sweep. Processes a launcher starts (torchrun, SLURM tasks, a submitit job per task) are fine. Checked
    before the sweep on its fixed settings (one line, exit 2)."""
    problem = _relaunch_problem(config.hydra.launcher, config.get("trainer") or {}, _launcher_name(config))
    if problem is not None:
        exit_with_error(problem)


def refuse_relaunched_processes_in_this_job(cfg: DictConfig) -> None:
    """The same check in each job of a sweep, on the job's own settings: a swept trainer.devices=1,2 (or
    trainer=cpu,ddp) is known only there. A ValueError, so that job alone fails and the sweep goes on: before,
    job 1's second process reran the whole sweep and Lightning killed it (exit 137)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    hydra = HydraConfig.get()
    problem = _relaunch_problem(
        hydra.launcher, cfg.get("trainer") or {}, hydra.runtime.choices.get("hydra/launcher")
    )
    if problem is not None:
        raise ValueError(problem)


def _relaunch_problem(launcher: DictConfig, trainer: Any, launcher_name: str | None) -> str | None:
    """Why a run of `trainer` cannot go under this sweep's `launcher`, or None."""
    from ..cluster.jobs import is_secondary_rank

    target = str(launcher.get("_target_", ""))
    # SLURM starts a task per device itself (and trainer=slurm's devices resolve only in the job).
    if "SlurmLauncher" in target:
        return None
    strategy = str(trainer.get("strategy", "auto"))
    launched = is_secondary_rank() or any(v in os.environ for v in ("WORLD_SIZE", "SLURM_NTASKS"))
    try:
        asked = trainer.get("devices", 1)
    except Exception:  # an interpolation only a job resolves: nothing to tell here
        return None
    devices = devices_asked(asked, trainer.get("accelerator", "auto"))
    if launched or "spawn" in strategy or devices <= 1:
        return None
    named = f"auto (all {devices} GPUs here)" if str(asked).strip() == "auto" else asked
    if target.endswith("BasicLauncher"):
        return (
            f"trainer.devices={named} cannot train in a sweep (-m) on this machine: Lightning "
            "starts a run's other processes by running the command again, which here is the whole sweep; run the "
            "jobs one at a time, or submit the sweep with hydra/launcher=slurm (one task per device)"
        )
    if "LocalLauncher" in target:  # submitit_local: Lightning would rerun submitit's job runner as rank 1
        return (
            f"trainer.devices={named} cannot train under hydra/launcher={launcher_name}: Lightning starts "
            "a run's other processes by running the command again, which here is submitit's job runner; give "
            "trainer.devices=1 to try the launcher here, or submit with hydra/launcher=slurm (one task per device)"
        )
    return None


def refuse_a_job_the_trainer_cannot_fill(config: DictConfig) -> None:
    """The devices and nodes each SLURM job gets against what its Trainer asks for, before anything is submitted:
    inside the job the same check (cluster.devices) came only after the queue's wait."""
    from ..cluster.devices import check_matches_launcher

    launcher = config.hydra.launcher
    tasks = launcher.get("tasks_per_node")
    if isinstance(tasks, int) and tasks < 1:
        exit_with_error(
            f"hydra.launcher.tasks_per_node={tasks} starts no task on a node (it follows gpus_per_node): give "
            "hydra.launcher.gpus_per_node=<GPUs per node, 1 or more>"
        )
    strategy = OmegaConf.select(config, "trainer.strategy")
    trainer = {"strategy": strategy if isinstance(strategy, str | None) else "sharded"}
    for key, launcher_key in (("devices", "tasks_per_node"), ("num_nodes", "nodes")):
        # trainer=slurm's ${hydra:launcher.…} resolves in the job only, to the launcher's own value.
        try:
            trainer[key] = OmegaConf.select(config, f"trainer.{key}")
        except Exception:
            trainer[key] = launcher.get(launcher_key)
    try:
        check_matches_launcher(trainer, launcher)
    except ValueError as error:
        exit_with_error(str(error))


def refuse_a_stop_signal_at_the_start(launcher: DictConfig) -> None:
    """SLURM sends the stop signal signal_delay_s before the time limit: at or past the limit's length, it comes
    as the job starts, and every requeued job would stop (and requeue) again without training."""
    delay, minutes = launcher.get("signal_delay_s"), launcher.get("timeout_min")
    if isinstance(delay, int) and isinstance(minutes, int) and minutes > 0 and delay >= minutes * 60:
        exit_with_error(
            f"hydra.launcher.signal_delay_s={delay} is the job's whole time limit or more (timeout_min={minutes}: "
            f"{minutes * 60} s): SLURM would signal each job to stop as it starts; give a signal_delay_s under "
            f"{minutes * 60} or a longer timeout_min"
        )


class CheckLauncher(Callback):
    """on_multirun_start runs before the sweeper instantiates the launcher (where a ??? would raise)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        missing = sorted(OmegaConf.missing_keys(launcher))  # full paths, e.g. hydra.launcher.partition
        if missing:
            keys = ", ".join(missing)
            example = " ".join(f"{key}=<value>" for key in missing)
            exit_with_error(
                f"hydra/launcher={_launcher_name(config)} needs {keys}: add {example} to the command"
            )
        if "SlurmLauncher" in str(launcher.get("_target_", "")):
            refuse_a_job_the_trainer_cannot_fill(config)
            refuse_a_stop_signal_at_the_start(launcher)
        # submitit's SLURM executor needs srun beside sbatch (before, its traceback: 'Could not detect "srun"').
        missing = [tool for tool in ("sbatch", "srun") if not shutil.which(tool)]
        if "SlurmLauncher" in str(launcher.get("_target_", "")) and missing:
            exit_with_error(
                f"hydra/launcher={_launcher_name(config)} submits with sbatch and srun, and {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not on this machine's PATH: launch from a SLURM login node "
                "(or use hydra/launcher=submitit_local to try it here)"
            )

        refuse_relaunched_processes_in_a_sweep(config)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "submitit" in str(config.hydra.launcher.get("_target_", "")):
            exit_with_error(
                f"hydra/launcher={_launcher_name(config)} submits jobs only in multirun mode: add -m "
                "(without it the run would start here)"
            )
