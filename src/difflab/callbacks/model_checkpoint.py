"""ModelCheckpoint that also writes last.ckpt when training ends between periodic saves, and keeps writing the
run's own last.ckpt after the run folder has been moved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from ..compat import last_saved_step, record_saved_step


class Checkpoint(ModelCheckpoint):
    """Periodic checkpoints as configured, plus `last.ckpt` at the final step (so it is never stale)."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and self.dirpath and trainer.global_step != last_saved_step(self):
            trainer.save_checkpoint(
                str(Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"),
                weights_only=self.save_weights_only,
            )
            record_saved_step(self, trainer.global_step)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # In a moved or copied run folder Lightning forgets last_model_path (its dirpath changed) and would
        # save last-v1.ckpt beside the last.ckpt being resumed, leaving a stale last.ckpt for the next resume.
        stored = Path(str(state_dict.get("last_model_path") or ""))
        last_name = f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        if self.save_last and self.dirpath and not self.last_model_path and stored.name == last_name:
            self.last_model_path = str(Path(self.dirpath) / last_name)
