"""W&B glue, all of it: offline unless the user has logged in, one W&B run per run folder (its id survives
resumes and requeues), sweep jobs named from their overrides and grouped by sweep, runs closed at job end.
W&B itself is reached only through Lightning's WandbLogger; this module only fills its config."""

from __future__ import annotations

import logging
import os
import re
import secrets
import string
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from lightning.pytorch import loggers as lightning_loggers
from omegaconf import DictConfig, open_dict

from ..compat import wandb_init_arguments

log = logging.getLogger("difflab")


class WandbLogger(lightning_loggers.WandbLogger):
    """Lightning's WandbLogger without the `anonymous=None` it always passes to wandb.init, which wandb answers
    with a deprecation warning on every run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        arguments = wandb_init_arguments(self)
        if arguments.get("anonymous") is None:
            arguments.pop("anonymous", None)


def wandb_login_configured() -> bool:
    """True when W&B itself finds credentials (WANDB_API_KEY, its settings, ~/.netrc for the host it talks to, an
    identity token): W&B's public check, which neither prompts nor verifies the key with the server. A malformed
    key is a ValueError of one line."""
    import wandb

    try:
        return wandb.login(prompt=False, verify=False)
    except wandb.errors.AuthenticationError as error:
        raise ValueError(f"W&B login: {error}") from None


def default_wandb_offline() -> str:
    """Set WANDB_MODE=offline when it is unset and no login is configured; return the mode in force."""
    if "WANDB_MODE" not in os.environ and not wandb_login_configured():
        os.environ["WANDB_MODE"] = "offline"
        log.info("W&B: no login configured, running offline (sync later with `wandb sync <run dir>/wandb`)")
    return os.environ.get("WANDB_MODE", "online")


ID_FILE = "wandb_run_id"
_ALPHABET = string.ascii_lowercase + string.digits
PLAUSIBLE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # W&B's own ids are 8 of [a-z0-9]; a user's may be longer


def read_run_id(run_dir: Path) -> str | None:
    """The W&B run id in <run_dir>/wandb_run_id, or None: a run folder is untrusted data (copied, moved, shared),
    so anything but one plausible id (PLAUSIBLE_ID) is ignored with a warning naming the file. The only reader
    of that file."""
    path = Path(run_dir) / ID_FILE
    if not path.is_file():
        return None
    try:
        with path.open("rb") as file:
            text = file.read(256).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        text = None
    if text is not None and PLAUSIBLE_ID.fullmatch(text):
        return text
    log.warning("ignoring %s: it does not hold a W&B run id (1 to 128 of A-Z a-z 0-9 _ -)", path)
    return None


def new_run_id() -> str:
    """8 random lowercase letters and digits, the shape of the ids W&B generates itself."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


def choose_run_id(configured: Any, run_dir: Path, stored_config: dict[str, Any] | None) -> str:
    """The id set in the config, else the run folder's, else the resumed checkpoint's, else a new one."""
    if configured:
        return str(configured)
    from_folder = read_run_id(run_dir)
    if from_folder:
        return from_folder
    stored = ((stored_config or {}).get("logger") or {}).get("wandb") or {}
    return str(stored["id"]) if stored.get("id") else new_run_id()


def attach_run_id(
    cfg: DictConfig, run_dir: Path, stored_config: dict[str, Any] | None, record: bool
) -> str | None:
    """Set cfg.logger.wandb.id (WandbLogger already resumes with resume="allow"); with `record` (rank 0) write
    it to the run folder. None when W&B is not among the loggers."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if not isinstance(wandb_cfg, DictConfig):
        return None
    run_id = choose_run_id(wandb_cfg.get("id"), run_dir, stored_config)
    with open_dict(wandb_cfg):
        wandb_cfg.id = run_id
    if record:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ID_FILE).write_text(run_id + "\n")
    return run_id


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


def name_wandb_run(cfg: DictConfig) -> None:
    """Fill cfg.logger.wandb for this Hydra job so runs read well in the W&B table: tagged with the
    experiment, job_type = the task (train), named from the experiment and the overrides that change what is
    trained ("digits_cpu: optim.lr=1e-4,seed=3"), grouped by experiment, or by sweep (sweep_group) in a
    multirun. Values the user set (name, group, job_type) are kept."""
    wandb_cfg = cfg.get("logger", {}).get("wandb") if cfg.get("logger") else None
    if not isinstance(wandb_cfg, DictConfig) or not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    experiment = hydra_cfg.runtime.choices.get("experiment")
    exclude = [*hydra_cfg.job.config.override_dirname.exclude_keys, "experiment"]
    overrides = job_run_name(hydra_cfg.overrides.task, exclude)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    with open_dict(wandb_cfg):
        tags = list(wandb_cfg.get("tags") or [])
        if experiment and experiment not in tags:
            wandb_cfg.tags = [*tags, experiment]
        if wandb_cfg.get("job_type") is None:
            wandb_cfg.job_type = str(cfg.task_name)
        if wandb_cfg.get("name") is None:
            parts = [p for p in (experiment, overrides) if p]
            fallback = f"job{hydra_cfg.job.num}" if multirun else None
            wandb_cfg.name = ": ".join(parts) or fallback
        if wandb_cfg.get("group") is None:
            root = (cfg.get("paths") or {}).get("root_dir")
            wandb_cfg.group = sweep_group(str(hydra_cfg.sweep.dir), root) if multirun else experiment


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


def log_scores_to_run(
    run_dir: Path, scores: Mapping[str, float], step: int, stored_config: Mapping[str, Any] | None
) -> str | None:
    """Log evaluate.py's scores (as eval/<name>, at the checkpoint's step) into the W&B run of the run folder they
    score, resuming its id (resume="allow"; offline unless a login is configured, WANDB_MODE respected), in the
    project the run logged to. Returns the run id; None (nothing logged) when the folder holds no usable id."""
    run_id = read_run_id(run_dir)
    if run_id is None:
        return None
    default_wandb_offline()
    stored = ((stored_config or {}).get("logger") or {}).get("wandb") or {}
    logger = WandbLogger(
        id=run_id,
        resume="allow",
        project=stored.get("project") or "difflab",
        entity=stored.get("entity"),
        save_dir=str(run_dir),
    )
    logger.log_metrics({f"eval/{key}": float(value) for key, value in scores.items()}, step=step)
    finish_wandb_run()
    return run_id


def finish_wandb_run(failed: bool = False) -> None:
    """Close the W&B run this process opened, if any: otherwise the next job of an in-process sweep would
    log into it (Lightning's WandbLogger reuses a run in progress). wandb is touched only if already loaded."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)
