"""ModelCheckpoint that also writes last.ckpt at the last step, between periodic saves and before the final grid and
FID (which can take minutes: a failure or a stop then loses nothing), and keeps writing the run's own last.ckpt
after the run folder has been moved."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from ..compat import last_saved_step, record_saved_step


class Checkpoint(ModelCheckpoint):
    """Periodic checkpoints as configured, plus `last.ckpt` at the final step (so it is never stale): at the end of
    the step that reaches max_steps, as a periodic one is written, else (early stopping, max_epochs) once training
    has ended."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        if 0 < trainer.max_steps <= trainer.global_step:
            self._save_last_step(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not ModelCheckpoint.on_train_end: since Lightning 2.6 it saves last once more when none of its own
        # periodic saves ran, which wrote last-v1.ckpt (after the final grid and FID) beside this last.ckpt.
        self._save_last_step(trainer)

    def _save_last_step(self, trainer: L.Trainer) -> None:
        if self.save_last and self.dirpath and trainer.global_step != last_saved_step(self):
            # Named before saving, as ModelCheckpoint does: it is part of the saved state, and a later save of
            # last by ModelCheckpoint then replaces this file instead of versioning its name.
            self.last_model_path = str(
                Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
            )
            trainer.save_checkpoint(self.last_model_path, weights_only=self.save_weights_only)
            record_saved_step(self, trainer.global_step)
            # As ModelCheckpoint tells them of its own saves: W&B's log_model uploads this last.ckpt too.
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.after_save_checkpoint(proxy(self))

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        # Called just before load_state_dict, which needs to know which file the state came from.
        self._resumed_from = None if trainer.ckpt_path is None else Path(trainer.ckpt_path)
        # A resume from the run's own last.ckpt replaces it. Set here too, since load_state_dict is not called
        # when the resume changed a setting (every_n_train_steps, …) that names this callback's state: before,
        # Lightning then wrote last-v1.ckpt beside a last.ckpt left at the resumed step. (A rewind to a step_ file
        # leaves a later last.ckpt alone: runs.resume sets it aside, or Lightning versions the new one's name.)
        last = f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        resumed = self._resumed_from
        own_last = resumed is not None and resumed.name == last and self.dirpath is not None
        if own_last and self.save_last and resumed.parent.resolve() == Path(self.dirpath).resolve():
            self.last_model_path = str(Path(self.dirpath) / last)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(self._rebased_if_moved(state_dict))
        # In a moved or copied run folder Lightning forgets last_model_path (its dirpath changed) and would
        # save last-v1.ckpt beside the last.ckpt being resumed, leaving a stale last.ckpt for the next resume.
        stored = Path(str(state_dict.get("last_model_path") or ""))
        last_name = f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        if self.save_last and self.dirpath and not self.last_model_path and stored.name == last_name:
            self.last_model_path = str(Path(self.dirpath) / last_name)

    def _rebased_if_moved(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """The stored state with its paths moved to this dirpath when the checkpoint resumed sits in this dirpath
        but names another (the run folder was moved or copied): Lightning then reloads the best and top-k
        checkpoints it keeps instead of warning that it forgets them, which left a top-k run with every old
        top-k file for good. A checkpoint of another run keeps its state as it is (a new folder starts afresh)."""
        stored = state_dict.get("dirpath")
        resumed = getattr(self, "_resumed_from", None)
        if not stored or not self.dirpath or stored == self.dirpath or resumed is None:
            return state_dict
        if resumed.parent.resolve() != Path(self.dirpath).resolve():
            return state_dict

        def moved(path: Any) -> Any:
            if isinstance(path, str) and Path(path).parent == Path(stored):
                return str(Path(self.dirpath) / Path(path).name)
            return path

        rebased = {key: moved(value) for key, value in state_dict.items()}
        rebased["dirpath"] = self.dirpath
        rebased["best_k_models"] = {moved(k): v for k, v in (state_dict.get("best_k_models") or {}).items()}
        return rebased
