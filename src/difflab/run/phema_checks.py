"""What a run with post-hoc EMA (callbacks.phema) is refused for, in one line before the run folder is made: no
checkpoints for the rebuild to read, and snapshot settings that are not numbers."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ..value_rules import whole
from .rules import check_values


def sigma_rels(value: object) -> str | None:
    """A rule: a list of numbers (each σ_rel's range is checked by the callback, in its own words)."""
    items = list(value) if OmegaConf.is_list(value) or isinstance(value, list | tuple) else None
    if items is None or any(isinstance(s, bool) or not isinstance(s, int | float) for s in items):
        return "is not a list of numbers, e.g. [0.05,0.10]"
    return None


RULES = {"callbacks.phema.every_n_steps": whole(1), "callbacks.phema.sigma_rels": sigma_rels}


def check_phema_run(cfg: DictConfig) -> None:
    """A one-line ValueError for callbacks.phema with values that are not numbers, or without the checkpoint
    callback: `python -m difflab.phema` takes the model's config from checkpoints/last.ckpt."""
    callbacks = cfg.get("callbacks") or {}
    if callbacks.get("phema") is None:
        return
    check_values(cfg, RULES)
    if callbacks.get("model_checkpoint") is None:
        # Before, callbacks=phema alone trained (no EMA, Lightning's own checkpoint elsewhere) and the rebuild
        # then failed on the missing checkpoints/last.ckpt.
        raise ValueError(
            "callbacks.phema without the default callbacks keeps no checkpoints/last.ckpt, which python -m "
            "difflab.phema rebuilds from: add callbacks=[default,phema]"
        )
