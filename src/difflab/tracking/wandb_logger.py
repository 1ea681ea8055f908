"""Lightning's WandbLogger as difflab uses it: offline unless a login is configured, evaluate.py's scores logged
into the run they score, and the run closed at job end."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import loggers as lightning_loggers

from ..compat import wandb_init_arguments
from .run_ids import read_run_id

log = logging.getLogger("difflab")


class WandbLogger(lightning_loggers.WandbLogger):
    """Lightning's WandbLogger without the `anonymous=None` it always passes to wandb.init, which wandb answers
    with a deprecation warning on every run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        arguments = wandb_init_arguments(self)
        if arguments.get("anonymous") is None:
            arguments.pop("anonymous", None)


@contextlib.contextmanager
def wandb_start_refusals_named() -> Iterator[None]:
    """Around the first use of a logger, which starts its W&B run: W&B refusing to start (online with no API key, a
    server it cannot reach) is one line that says how to go on, raised as a ValueError so the refused run gives its
    folder back. Before: wandb's UsageError or CommError in a traceback, and a folder that refused the rerun."""
    try:
        yield
    except Exception as error:
        import wandb

        if not isinstance(error, (wandb.errors.UsageError, wandb.errors.CommError)):
            raise
        first = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
        # unset, the mode is online because a login is configured (default_wandb_offline): say so, not "=online"
        mode = (
            f"WANDB_MODE={os.environ['WANDB_MODE']}"
            if "WANDB_MODE" in os.environ
            else "online: a login is found"
        )
        raise ValueError(
            f"W&B could not start its run ({mode}): {first}; check the W&B login, network and "
            "logger.wandb settings, or log offline with WANDB_MODE=offline (`wandb sync <run>/wandb` later), or use "
            "logger=csv"
        ) from None


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
    check_wandb_mode(os.environ.get("WANDB_MODE"))
    if "WANDB_MODE" not in os.environ and not wandb_login_configured():
        import wandb

        os.environ["WANDB_MODE"] = "offline"
        # The login check set up W&B's process-wide settings while the mode was still unset (online); drop them
        # so the logger's wandb.init reads WANDB_MODE instead of asking for an API key.
        wandb.teardown()
        log.info("W&B: no login configured, running offline (sync later with `wandb sync <run dir>/wandb`)")
    return os.environ.get("WANDB_MODE", "online")


def check_wandb_mode(mode: str | None) -> None:
    """A WANDB_MODE that W&B does not have, one line naming the ones it has (W&B's own list, from its settings'
    declared type): before, "1 validation error for Settings", the lines that named mode cut off."""
    import wandb

    try:
        modes = typing.get_args(wandb.Settings.model_fields["mode"].annotation)
    except (AttributeError, KeyError):  # a W&B whose settings read otherwise: its own error stands
        return
    if mode is not None and modes and mode not in modes:
        raise ValueError(
            f"WANDB_MODE={mode} is not a W&B mode: give one of {', '.join(modes)} (offline writes the run to disk "
            "for a later `wandb sync`)"
        )


def log_scores_to_run(
    run_dir: Path, scores: Mapping[str, float], step: int, stored_config: Mapping[str, Any] | None
) -> str | None:
    """Log evaluate.py's scores (as eval/<name>, at the checkpoint's step) into the W&B run of the run folder they
    score, resuming its id (resume="allow"; offline unless a login is configured, WANDB_MODE respected), in the
    project the run logged to. Returns the run id; None (nothing logged) when the folder holds no usable id."""
    run_id = read_run_id(run_dir)
    if run_id is None:
        return None
    # Online, the scores reach the server whatever the folder.
    if default_wandb_offline() in ("offline", "dryrun"):
        check_wandb_folder_writable(run_dir / "wandb")
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


def check_wandb_folder_writable(folder: Path) -> None:
    """A one-line error where the run's wandb/ folder cannot be written: W&B would keep the run in a temporary
    folder instead (/tmp/wandb), where no `wandb sync` of the run finds it."""
    probe = folder / f".difflab-probe-{os.getpid()}"
    try:
        folder.mkdir(exist_ok=True)  # W&B makes it next anyway
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"cannot write {folder}: {error.strerror or error} (W&B would keep them in a temporary folder no sync "
            "of the run finds); the report holds them"
        ) from error


def finish_wandb_run(failed: bool = False) -> None:
    """Close the W&B run this process opened, if any: otherwise the next job of an in-process sweep would
    log into it (Lightning's WandbLogger reuses a run in progress). wandb is touched only if already loaded."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def log_scores_beside(
    run_dir: Path | None, scores: Mapping[str, float], step: int, stored_config: Mapping[str, Any] | None
) -> None:
    """The scores of a run folder's checkpoint (run_dir; None for a checkpoint of no run) whose run logged to W&B
    go into that W&B run too. The report is written already, so a W&B failure is a warning, not an error."""
    if run_dir is None:
        return
    try:
        run_id = log_scores_to_run(run_dir, scores, step, stored_config)
    except Exception as error:  # noqa: BLE001 (W&B raises many kinds; none may cost the written report)
        log.warning("the scores were not logged to W&B: %s", error)
        return
    if run_id:
        log.info("logged the scores to W&B run %s as eval/*", run_id)
