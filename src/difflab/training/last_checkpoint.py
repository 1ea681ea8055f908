"""Write the run's last.ckpt at a step boundary outside ModelCheckpoint's schedule (a stop signal, a failure after
the step), so that a resume continues from it exactly and the run's ModelCheckpoint goes on overwriting it."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


def save_last(trainer: L.Trainer, path: Path) -> None:
    """Save the whole training state (weights, EMA, optimizer, loops, data position) to `path` on every rank
    (rank 0 writes, all wait for it). The Trainer's AtomicCheckpointIO, which train() installs, writes it whole or
    not at all, so a kill during the write keeps the previous file."""
    for callback in trainer.checkpoint_callbacks:
        # A ModelCheckpoint writing last.ckpt into the same folder records it as its own (in the state saved
        # here), so that after the resume it overwrites it instead of starting last-v1.ckpt.
        mine = isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath
        if mine and Path(callback.dirpath).resolve() == path.parent.resolve():
            callback.last_model_path = str(Path(callback.dirpath) / path.name)
    trainer.save_checkpoint(path, weights_only=False)  # a whole checkpoint: it is resumed from
