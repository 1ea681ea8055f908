"""A callback for the DDP failure test: one rank fails with a user error (a ValueError) after its first step."""

from __future__ import annotations

import lightning as L


class FailOnOneRank(L.Callback):
    """Raise `ValueError(message)` on global rank `rank` once its first optimizer step is done."""

    def __init__(self, rank: int = 0, message: str = "probe: one rank failed") -> None:
        self.rank, self.message = rank, message

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_rank == self.rank and trainer.global_step >= 1:
            raise ValueError(self.message)
