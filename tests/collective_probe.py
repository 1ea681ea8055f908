"""A callback for the DDP signal test: counts the Python-level collectives (broadcast, all_reduce, barrier) each
training batch makes, by the global step it ends at, and can signal its own process on one rank at one step."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist

COUNTED = ("broadcast", "all_reduce", "barrier")


class CollectiveProbe(L.Callback):
    def __init__(self, dirpath: str, signal_rank: int = 0, signal_at_step: int | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.signal_rank, self.signal_at_step = signal_rank, signal_at_step
        self.counts: Counter[int] = Counter()
        self._calls = 0
        self._real: dict[str, object] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name in COUNTED:
            real = self._real[name] = getattr(dist, name)

            def counted(*args: object, _real: object = real, **kwargs: object) -> object:
                self._calls += 1
                return _real(*args, **kwargs)

            setattr(dist, name, counted)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_rank == self.signal_rank and trainer.global_step == self.signal_at_step:
            os.kill(os.getpid(), signal.SIGUSR2)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        # The calls of the batch that ends at this global step (CheckpointOnSignal's included: train() puts it
        # right after the EMA, before this probe). A save step raises Preempted: on_exception counts those.
        self.counts[trainer.global_step] += self._calls
        self._calls = 0
        self._write(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.counts[trainer.global_step] += self._calls
        self._write(trainer)
        for name, real in self._real.items():
            setattr(dist, name, real)

    def _write(self, trainer: L.Trainer) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        torch.save(dict(self.counts), self.dirpath / f"rank{trainer.global_rank}.pt")
