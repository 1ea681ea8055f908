"""A callback for the failure tests: one rank fails with a user error (a ValueError) after a given optimizer step, or
when training ends, as a sample grid or FID evaluation that runs out of memory would; optionally with its weights
turned to NaN first."""

from __future__ import annotations

import os
import signal

import lightning as L
import torch


class FailOnOneRank(L.Callback):
    """Raise `ValueError(message)` on global rank `rank` once optimizer step `at_step` is done (`poison`: after
    setting the network's weights to NaN, as a diverged run has them)."""

    def __init__(
        self,
        rank: int = 0,
        message: str = "probe: one rank failed",
        at_step: int = 1,
        poison: bool = False,
        at_train_end: bool = False,
    ) -> None:
        self.rank, self.message, self.at_step, self.poison = rank, message, at_step, poison
        self.at_train_end = at_train_end  # fail in on_train_end (the final grid or FID) instead

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if not self.at_train_end:
            self.fail(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_train_end:
            self.fail(trainer, pl_module)

    def fail(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank == self.rank and trainer.global_step >= self.at_step:
            if self.poison:
                with torch.no_grad():
                    for p in pl_module.parameters():
                        p.fill_(float("nan"))
            raise ValueError(self.message)


class SignalWhenBuilt(L.Callback):
    """Send `signal_name` to the process of local rank `rank` as its callbacks are built, before it joins the
    process group: a stop that reaches a DDP process Lightning started while it is still setting up."""

    def __init__(self, rank: int = 1, signal_name: str = "SIGTERM") -> None:
        if os.environ.get("LOCAL_RANK", "0") == str(rank):
            os.kill(os.getpid(), signal.Signals[signal_name])
