"""How runs read in the W&B table: a sweep job named from the overrides that change what it trains, a sweep's
group, and the run's config as flat `group.key` names without machine paths."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

# Overrides that say where or how a job runs, not what it trains: left out of run names.
NOT_IN_NAMES = {
    "ckpt_path",
    "cpu_threads",
    "tags",
    "optimized_metric",
    "hparams_search",
    "data.root",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
}
NOT_IN_NAMES_PREFIXES = ("paths", "logger", "callbacks", "hydra")


def job_run_name(overrides: Sequence[str], exclude: Sequence[str] = ()) -> str | None:
    """`key=value,…` of a job's overrides as typed, sorted like Hydra's override_dirname, noise keys left out."""
    kept = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key in NOT_IN_NAMES or key in exclude or key.split(".")[0].split("/")[0] in NOT_IN_NAMES_PREFIXES:
            continue
        kept.append(override.input_line)
    return ",".join(sorted(kept)) or None


def sweep_group(sweep_dir: str, root_dir: str | None) -> str:
    """A sweep's W&B group: its folder relative to the project (multirun/train/<date>/<time>), a relative
    hydra.sweep.dir as given, or the folder's name where it lies elsewhere; never a machine path."""
    sweep = Path(sweep_dir)
    if not sweep.is_absolute():
        return sweep.as_posix()
    if root_dir and sweep.is_relative_to(root_dir):
        return sweep.relative_to(root_dir).as_posix()
    return sweep.name


def clean_config(config: dict[str, Any]) -> dict[str, Any]:
    """The run's config as loggers should show it: flat `group.key` names, no `_target_`/`_partial_`, no
    machine paths (paths.*, hydra, data.root's absolute folder, dirpaths) — what a reader compares across runs."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if str(key).startswith("_") or (not prefix and key in ("paths", "hydra")):
                    continue
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(node, str) and (node.startswith("/") or "dirpath" in prefix or "save_dir" in prefix):
            return
        else:
            flat[prefix] = node

    walk(config, "")
    return flat
