"""What a run with post-hoc EMA (callbacks.phema) is refused for, in one line before the run folder is made: no
checkpoints for the rebuild to read."""

from __future__ import annotations

from omegaconf import DictConfig


def check_phema_run(cfg: DictConfig) -> None:
    """A one-line ValueError for callbacks.phema without the checkpoint callback: `python -m difflab.phema` takes
    the model's config from checkpoints/last.ckpt."""
    callbacks = cfg.get("callbacks") or {}
    if callbacks.get("phema") is None:
        return
    if callbacks.get("model_checkpoint") is None:
        # Before, callbacks=phema alone trained (no EMA, Lightning's own checkpoint elsewhere) and the rebuild
        # then failed on the missing checkpoints/last.ckpt.
        raise ValueError(
            "callbacks.phema without the default callbacks keeps no checkpoints/last.ckpt, which python -m "
            "difflab.phema rebuilds from: add callbacks=[default,phema]"
        )
