"""Write the run's last.ckpt at a step boundary outside ModelCheckpoint's schedule (a stop signal, a failure after
the step), so that a resume continues from it exactly and the run's ModelCheckpoint goes on overwriting it; with the
periodic checkpoint due at that step, which the stop or failure kept ModelCheckpoint (called last) from writing."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from ..compat import last_saved_step


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


def save_step(trainer: L.Trainer, path: Path) -> Path:
    """Save this step as the run's checkpoint writer would have at its end (its periodic checkpoint, and last.ckpt
    with it, where one was due), else last.ckpt at `path`; returns the last.ckpt that holds it. Every rank."""
    writer = trainer.checkpoint_callback
    if isinstance(writer, ModelCheckpoint):
        # Its own step-end save (nothing where none is due); it reads none of the batch's arguments.
        writer.on_train_batch_end(trainer, trainer.lightning_module, None, None, 0)
    written = last_written_at(trainer, trainer.global_step)
    if written is None:
        save_last(trainer, path)
    return written or path


def last_written_at(trainer: L.Trainer, step: int) -> Path | None:
    """The last.ckpt the run's checkpoint writer has written at `step`, if it has."""
    writer = trainer.checkpoint_callback
    if not isinstance(writer, ModelCheckpoint) or not (writer.save_last and writer.dirpath):
        return None
    if last_saved_step(writer) != step:
        return None
    return Path(writer.dirpath) / f"{writer.CHECKPOINT_NAME_LAST}{writer.FILE_EXTENSION}"
