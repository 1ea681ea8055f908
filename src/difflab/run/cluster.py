"""The cluster checks that read Hydra's config: the trainer's devices and nodes (with the launcher's) before the
Trainer is built, and the Hydra launcher before anything is submitted (difflab.cluster holds the rest: ranks,
device checks, requeue). Each problem is one line and exit 2."""

from __future__ import annotations

import shutil
import sys
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..cluster.devices import check_devices, check_nodes, check_sampler_setting


def exit_with_error(message: str) -> NoReturn:
    """Print `error: message` and exit 2 from a Hydra callback: Hydra turns an Exception raised in a callback
    into a warning and carries on, but SystemExit is not an Exception."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


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
            exit_with_error(
                f"hydra/launcher={_launcher_name(config)} needs {keys}: add {example} to the command"
            )
        if "SlurmLauncher" in str(launcher.get("_target_", "")) and not shutil.which("sbatch"):
            exit_with_error(
                f"hydra/launcher={_launcher_name(config)} submits with sbatch, which is not on this machine's "
                "PATH: launch from a SLURM login node (or use hydra/launcher=submitit_local to try it here)"
            )

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "submitit" in str(config.hydra.launcher.get("_target_", "")):
            exit_with_error(
                f"hydra/launcher={_launcher_name(config)} submits jobs only in multirun mode: add -m "
                "(without it the run would start here)"
            )
