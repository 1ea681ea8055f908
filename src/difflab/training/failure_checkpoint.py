"""Keep the steps a run has trained when something after a step fails (a sample grid or FID evaluation out of
memory, a user's callback): last.ckpt is written at that step before the run ends, as a stop signal writes it.
Lightning calls checkpoint writers last, so without this a grid or FID evaluation failing at a checkpoint's step
also loses that checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L

from ..cluster.stop_signal import StoppedBySignal
from ..io.atomic import is_out_of_space
from .finite import NonFiniteError, check_losses_so_far
from .last_checkpoint import last_written_at, save_step
from .resume_advice import resume_advice

log = logging.getLogger("difflab")


class CheckpointOnFailure(L.Callback):
    """Notes each optimizer step as complete (placed after the EMA, so the step includes its EMA update, and before
    grids and FID); an exception that then ends training before the next step starts has `path` written at that
    step and a note added to the error saying so (with the periodic checkpoint due at that step, if one was).

    A Ctrl-C that stops at once (KeyboardInterrupt: a second one, the first having asked CheckpointOnSignal to save
    at the end of the next step, or one after the last step) that lands while a grid or FID evaluation samples
    saves the step just done too before the run ends; so does SIGTERM after the last step (the final grid or FID).

    One process only: under DDP or FSDP a failure may be one rank's, and a save is a collective the other ranks
    would not join. Nothing is written for a non-finite loss or weights (NaN must not reach the disk), a full disk,
    a failure in validation or during a step (its state is half made), or a stop CheckpointOnSignal made (it saved).
    Where the run's checkpoint writer has written last.ckpt at that step already (the last step, before the final
    grid and FID: callbacks.Checkpoint), nothing is written again and the note names it, under DDP too.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._step_at_batch_start = -1
        self._completed_step: int | None = None
        self._completed_before_validation: int | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._step_at_batch_start = trainer.global_step
        self._completed_step = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step != self._step_at_batch_start:  # not a micro-batch of gradient accumulation
            self._completed_step = trainer.global_step

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._completed_before_validation, self._completed_step = self._completed_step, None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._completed_step = self._completed_before_validation  # the step is whole again (the final FID)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        step = trainer.global_step
        interrupted = isinstance(exception, KeyboardInterrupt)  # Ctrl-C while a grid or FID sampled
        stopped = isinstance(exception, StoppedBySignal)  # SIGTERM then (CheckpointOnSignal has let go)
        if self._completed_step != step or not (interrupted or stopped or isinstance(exception, Exception)):
            return
        if isinstance(exception, NonFiniteError) or is_out_of_space(exception):
            return
        path = last_written_at(trainer, step)  # the last step, written before the final grid and FID
        if path is None:
            if trainer.world_size > 1:
                return
            try:
                check_losses_so_far(pl_module)  # the module refuses non-finite weights itself too
                path = save_step(trainer, self.path)
            except Exception as error:  # noqa: BLE001 (the run's own error is the one to report)
                log.warning("%s was not written after the failure: %s", self.path, error)
                return
        if interrupted or stopped:  # the stop's one line ends with this
            exception.add_note(f"saved {path} at step {step}: {resume_advice(path)}")
        else:
            exception.add_note(f"{path} holds step {step}: {resume_advice(path)} once it is fixed")
