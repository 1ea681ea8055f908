"""How runs read in the W&B table: a run's name, tags, job type and group (a sweep job named from the overrides
that change what it trains, a sweep's group), and the run's config as flat `group.key` names without machine
paths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

# Overrides that say where or how a job runs, never what it trains (its folders, loggers, workers, progress bar).
HOW_IT_RUNS = {
    "cpu_threads",
    "tags",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.download",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
}
HOW_IT_RUNS_PREFIXES = ("paths", "logger", "hydra")
HOW_IT_RUNS_SUFFIXES = ("cache_dir",)  # metrics.cache_dir, data.text_cache_dir, latent_cache_dir

# Left out of run names besides: how a launch went on or was searched, and values too long for a name.
NOT_IN_NAMES = HOW_IT_RUNS | {"ckpt_path", "optimized_metric", "hparams_search", "data.root"}
NOT_IN_NAMES_PREFIXES = (*HOW_IT_RUNS_PREFIXES, "callbacks")


def says_where_not_what(key: str) -> bool:
    """Whether an override key says where or how a job runs (a folder, a logger, a worker count), never what it
    trains."""
    return (
        key in HOW_IT_RUNS
        or key.split(".")[0].split("/")[0] in HOW_IT_RUNS_PREFIXES
        or key.endswith(HOW_IT_RUNS_SUFFIXES)
    )


def _left_out_of_names(key: str) -> bool:
    return (
        key in NOT_IN_NAMES
        or key.split(".")[0].split("/")[0] in NOT_IN_NAMES_PREFIXES
        or key.endswith(HOW_IT_RUNS_SUFFIXES)
    )


def job_run_name(
    overrides: Sequence[str], exclude: Sequence[str] = (), root_dir: str | None = None
) -> str | None:
    """`key=value,…` of a job's overrides as Hydra hands them to it (a swept 1e-3 reads 0.001), sorted like Hydra's
    override_dirname, noise keys left out; a path in the project `root_dir` relative to it, as sweep_group gives
    the sweep's folder (two runs' paths stay told apart)."""
    kept = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key in exclude or _left_out_of_names(key):
            continue
        line = override.input_line
        value = override.value()
        if (
            root_dir
            and isinstance(value, str)
            and Path(value).is_absolute()
            and Path(value).is_relative_to(root_dir)
        ):
            line = line.replace(value, Path(value).relative_to(root_dir).as_posix(), 1)
        kept.append(line)
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


def wandb_run_fields(
    given: Mapping[str, Any],
    task: str,
    experiment: str | None,
    overrides: str | None,
    sweep_job: int | None = None,
    sweep_group: str | None = None,
) -> dict[str, Any]:
    """The W&B logger's name, tags, job_type and group for a run, keeping what the user set (`given`): tagged with
    the experiment, job_type = the task (train), named from the experiment and the overrides that change what is
    trained ("digits_cpu: optim.lr=1e-4,seed=3"; job<N> for a sweep's job with neither), grouped by experiment,
    or by `sweep_group` for job number `sweep_job` of a sweep."""
    fields: dict[str, Any] = {}
    given_tags = given.get("tags")
    # tags=foo is one tag (before, split into f, o, o): Hydra reads a single word as a string, not a list.
    tags = [given_tags] if isinstance(given_tags, str) else list(given_tags or [])
    if experiment and experiment not in tags:
        tags.append(experiment)
    if isinstance(given_tags, str) or tags != list(given_tags or []):
        fields["tags"] = tags
    if given.get("job_type") is None:
        fields["job_type"] = task
    if given.get("name") is None:
        fallback = None if sweep_job is None else f"job{sweep_job}"
        fields["name"] = ": ".join(p for p in (experiment, overrides) if p) or fallback
    if given.get("group") is None:
        fields["group"] = experiment if sweep_job is None else sweep_group
    return fields


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
