"""ModelCheckpoint that also writes last.ckpt when training ends between periodic saves."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class Checkpoint(ModelCheckpoint):
    """Periodic checkpoints as configured, plus `last.ckpt` at the final step (so it is never stale)."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and self.dirpath and trainer.global_step != self._last_global_step_saved:
            trainer.save_checkpoint(
                str(Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}")
            )
            self._last_global_step_saved = trainer.global_step
