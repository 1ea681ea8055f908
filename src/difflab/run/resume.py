"""Resume a run: find its checkpoint (ckpt_path=last, a file, or by itself when SLURM requeues the job), refuse
a config that contradicts it, and keep what the first part of the run logged."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from .checkpoint import read_checkpoint

LAST = Path("checkpoints") / "last.ckpt"

# What a checkpoint fixes: another value is another model, or (optim) one the restored optimizer state would
# silently override. Everything else (max_steps, loggers, callbacks, devices, batch size) may change.
FIXED_BY_CHECKPOINT = (
    "model",
    "schedule",
    "prediction_type",
    "data.dataset",
    "data.image_size",
    "data.channels",
    "optim",
)
_SHOWN = 6  # differences named in the one-line error; the rest are counted


def is_requeued_job() -> bool:
    """True where a last.ckpt in the run folder can only be this job's own, written before a requeue: a SLURM
    job SLURM has restarted (SLURM_RESTART_COUNT > 0), or any job submitit launched (SUBMITIT_EXECUTOR is set;
    submitit reruns a requeued job with the same overrides in the same folder, locally too)."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0").strip()
    return restarts not in ("", "0") or bool(os.environ.get("SUBMITIT_EXECUTOR"))


def resume_path(ckpt_path: Any, run_dir: Path) -> Path | None:
    """The checkpoint a run starts from, or None for a fresh run.

    ckpt_path=last is <run_dir>/checkpoints/last.ckpt; any other value is a checkpoint file. Either must exist.
    With no ckpt_path, a requeued SLURM job resumes from its own last.ckpt if it wrote one before it stopped.
    """
    if ckpt_path is None or str(ckpt_path) == "":
        last = run_dir / LAST
        return last if is_requeued_job() and last.is_file() else None
    if str(ckpt_path) == "last":
        path = run_dir / LAST
        if not path.is_file():
            raise FileNotFoundError(
                f"ckpt_path=last: no checkpoint at {path}; pass hydra.run.dir=<the run folder to resume> "
                "or ckpt_path=<checkpoint file>"
            )
        return path
    path = Path(str(ckpt_path))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def read_resumable(path: Path) -> dict[str, Any]:
    """The checkpoint (tensors memory-mapped), refused in one line unless it holds what a resume restores."""
    ckpt = read_checkpoint(path, mmap=True)
    missing = [key for key in ("global_step", "loops", "optimizer_states") if key not in ckpt]
    if missing:
        raise ValueError(
            f"checkpoint {path} cannot be resumed: it has no {', '.join(missing)} (weights only?)"
        )
    return ckpt


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, child in value.items():
            out.update(_leaves(child, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def contradictions(cfg: DictConfig, stored: dict[str, Any]) -> list[str]:
    """`key=new (checkpoint: old)` for every FIXED_BY_CHECKPOINT setting whose resolved value differs.

    Keys only one side has are skipped: a config key added after the checkpoint was written is not a change.
    """
    found = []
    for key in FIXED_BY_CHECKPOINT:
        node = OmegaConf.select(cfg, key)
        if node is None:
            continue
        current = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        old: Any = stored
        for part in key.split("."):
            old = old.get(part) if isinstance(old, dict) else None
        if old is None:
            continue
        new_leaves, old_leaves = _leaves(current, key), _leaves(old, key)
        for leaf, value in new_leaves.items():
            if leaf in old_leaves and old_leaves[leaf] != value:
                found.append(f"{leaf}={value} (checkpoint: {old_leaves[leaf]})")
    return found


def check_matches_checkpoint(cfg: DictConfig, stored: dict[str, Any], path: Path) -> None:
    """Raise a one-line ValueError naming every setting of cfg that contradicts the checkpoint's config."""
    found = contradictions(cfg, stored)
    if not found:
        return
    shown = ", ".join(found[:_SHOWN]) + (f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else "")
    raise ValueError(
        f"the config contradicts checkpoint {path}: {shown}; resume with the checkpoint's settings "
        "(drop those overrides) or start a new run"
    )


def keep_earlier_csv_logs(cfg: DictConfig, step: int) -> None:
    """Point CSV loggers at a new version folder when resuming: Lightning's CSVLogger deletes the metrics.csv it
    finds in its folder, which holds the first part of this run."""
    loggers = cfg.get("logger") or {}
    for entry in loggers.values():
        if not isinstance(entry, DictConfig) or not str(entry.get("_target_", "")).endswith("CSVLogger"):
            continue
        base = Path(str(entry.save_dir)) / str(entry.get("name") or "")
        version, n = f"resumed_step_{step:07d}", 1
        while (base / version).exists():
            n += 1
            version = f"resumed_step_{step:07d}_{n}"
        with open_dict(entry):
            entry.version = version
