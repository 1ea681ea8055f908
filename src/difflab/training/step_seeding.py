"""Reseed torch before every training micro-batch, so a step's draws depend only on (seed, step, micro, rank)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from ..compat import set_logging_step
from ..micro_batch_seeds import TRAINING_STREAM, MicroBatchSeeds


class SeedEachStep(L.Callback):
    """Before each micro-batch, reseed torch's global generators (CPU and every CUDA device) from
    (seed, global step, micro-batch, global rank): t, ε and dropout of the training step come from there.
    Each DDP rank draws differently, and a resumed run draws exactly what an uninterrupted one would.

    Also keeps Lightning's logging step equal to the global step (see `on_train_batch_start`).
    """

    def __init__(self, seed: int) -> None:
        self.seeds = MicroBatchSeeds(seed, TRAINING_STREAM)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        seed = self.seeds.next(trainer)
        if trainer.strategy.root_device.type == "cpu":
            # torch.manual_seed would also queue a seed for CUDA, which (not initialised in a CPU run) records the
            # caller's formatted stack each time: 0.1-2 ms per step, more than a small net's EMA update.
            torch.default_generator.manual_seed(seed)
        else:
            torch.manual_seed(seed)
        # Lightning's logging step can fall one behind the global step after a resume (see compat).
        set_logging_step(trainer, trainer.global_step)
