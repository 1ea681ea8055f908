"""Run W&B offline unless the user has logged in: an online run with no reachable server hangs."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

log = logging.getLogger("difflab")


def wandb_login_configured() -> bool:
    """True when an API key is in the environment or in ~/.netrc (where `wandb login` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        hosts = netrc.netrc(netrc_path).hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def default_wandb_offline() -> str:
    """Set WANDB_MODE=offline when it is unset and no login is configured; return the mode in force."""
    if "WANDB_MODE" not in os.environ and not wandb_login_configured():
        os.environ["WANDB_MODE"] = "offline"
        log.info("W&B: no login configured, running offline (sync later with `wandb sync <run dir>/wandb`)")
    return os.environ.get("WANDB_MODE", "online")
