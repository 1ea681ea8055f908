"""Training progress over the whole run: global step / max_steps, it/s, ETA and loss (Lightning's own bar
counts per epoch and reads "Epoch 0/-2", or "14/10" after a resume)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar

from ..progress import Progress


class StepProgressBar(ProgressBar):
    """A rich bar on a terminal; plain lines every `every_n_seconds` where stdout is a file (SLURM logs).

    Work between steps (a sample grid, an FID evaluation) reports through `busy(...)`.
    """

    def __init__(self, every_n_seconds: float = 30.0) -> None:
        super().__init__()
        self.every_n_seconds = every_n_seconds
        self._enabled = True
        self._progress: Progress | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        # Lightning's estimate is the smaller of max_steps and max_epochs' batches (trainer.max_epochs=1 on a 26-step
        # epoch ends at 26, not at max_steps).
        estimated = trainer.estimated_stepping_batches
        total = int(estimated) if estimated != float("inf") else None
        if total is None and trainer.max_steps and trainer.max_steps > 0:
            total = trainer.max_steps
        step = trainer.global_step
        self._progress = Progress("train", total, "steps", start=step, every_n_seconds=self.every_n_seconds)
        self._progress.__enter__()
        self._progress.update(step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._progress is None or trainer.global_step == self._progress.done:
            return
        # Reading the loss makes the host wait for the device: only when the bar or the next line shows it.
        due = self._progress.due(trainer.global_step)
        self._progress.update(trainer.global_step, **(self._losses(trainer, pl_module) if due else {}))

    def _losses(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = self.get_metrics(trainer, pl_module)
        return {key: metrics[key] for key in ("train/loss", "val/loss") if key in metrics}

    def _close(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._progress is not None:  # the last line shows the last loss
            self._progress.fields.update(self._losses(trainer, pl_module))
        self._close()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # A stop or failure raised in a step's on_train_batch_end comes before this bar's: the last line counts
        # the step it saved ("saved … at step 177"), not the one before.
        if self._progress is not None and trainer.global_step != self._progress.done:
            self._progress.update(trainer.global_step)
        self._close()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return {k: v for k, v in super().get_metrics(trainer, pl_module).items() if k != "v_num"}


@contextlib.contextmanager
def busy(trainer: L.Trainer, what: str, total: int, unit: str = "steps") -> Iterator[Callable[[], None]]:
    """Progress of work a callback does between training steps (a grid, an FID evaluation): yields a function
    to call per unit of work. On a terminal the training bar's description counts it; in a log file it gets
    plain lines of its own (rate, ETA). Silent on other ranks and without a StepProgressBar."""
    bar = getattr(trainer, "progress_bar_callback", None)
    if not trainer.is_global_zero or not isinstance(bar, StepProgressBar) or not bar.is_enabled:
        yield lambda: None
        return
    progress = bar._progress
    if progress is None or not progress.live:
        # In a log file, or once training's bar has closed (the final grid and FID, minutes for a large one):
        # lines of its own.
        with Progress(
            what, total, unit, every_n_seconds=10.0, live=None if progress is None else False
        ) as own:
            yield own.advance
        return
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        progress.describe(f"{what} {done}/{total} {unit}")

    try:
        yield step
    finally:
        progress.describe("train")
