"""One W&B run per run folder: its id survives resumes and requeues (the folder's wandb_run_id file, else the
resumed checkpoint's config); a run folder is untrusted data, so only a plausible id is read."""

from __future__ import annotations

import logging
import re
import secrets
import string
from pathlib import Path
from typing import Any

log = logging.getLogger("difflab")

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
    """The id set in the config (one line refusing an id W&B would refuse in a traceback), else the run folder's,
    else the resumed checkpoint's, else a new one."""
    if configured:
        if not PLAUSIBLE_ID.fullmatch(str(configured)):
            raise ValueError(
                f"logger.wandb.id={configured} is not a W&B run id: give 1 to 128 of A-Z a-z 0-9 _ -"
            )
        return str(configured)
    from_folder = read_run_id(run_dir)
    if from_folder:
        return from_folder
    stored = ((stored_config or {}).get("logger") or {}).get("wandb") or {}
    return str(stored["id"]) if stored.get("id") else new_run_id()
