"""One W&B run per run folder: its id is kept in <run folder>/wandb_run_id and in every checkpoint's stored
config, so a resumed or requeued run goes on logging into the same W&B run (no split curves)."""

from __future__ import annotations

import secrets
import string
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

ID_FILE = "wandb_run_id"
_ALPHABET = string.ascii_lowercase + string.digits


def new_run_id() -> str:
    """8 random lowercase letters and digits, the shape of the ids W&B generates itself."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


def choose_run_id(configured: Any, run_dir: Path, stored_config: dict[str, Any] | None) -> str:
    """The id set in the config, else the run folder's, else the resumed checkpoint's, else a new one."""
    if configured:
        return str(configured)
    id_file = run_dir / ID_FILE
    if id_file.is_file() and id_file.read_text().strip():
        return id_file.read_text().strip()
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
