"""A callback for the preemption tests: writes the step reached to <dirpath>/step after every step and can
send its own process a signal once (or `times` in a row: Ctrl-C pressed twice), at the start of a given step (so
the signal lands mid-step)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch

from difflab.diffusion import DDIMSampler


class StepProbe(L.Callback):
    def __init__(
        self,
        dirpath: str,
        signal_at_step: int | None = None,
        signal_name: str = "SIGUSR2",
        times: int = 1,
        after_step: bool = False,
        at_train_end: bool = False,
        rank: int | None = None,
        group: bool = False,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.group = group  # signal every process of the run's process group (data loader workers too)
        self.signal_at_step = signal_at_step
        self.signum = signal.Signals[signal_name]
        self.times = times
        self.after_step = (
            after_step  # signal once step `signal_at_step` is done (as a grid or FID runs), not in it
        )
        self.at_train_end = at_train_end  # signal once training has ended (as the final grid or FID runs)
        self.rank = rank  # under DDP: the one rank signalled (as `kill <pid>` does), else every rank

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if not self.after_step:
            self.signal_once(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / "step").write_text(str(trainer.global_step))
        if self.after_step:
            self.signal_once(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_train_end and self.rank in (None, trainer.global_rank):
            os.kill(os.getpid(), self.signum)

    def signal_once(self, trainer: L.Trainer) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        marker = self.dirpath / "signalled"
        if trainer.global_step == self.signal_at_step and not marker.exists():
            marker.write_text(str(trainer.global_step))  # once: the requeued job must not be signalled again
            for _ in range(self.times):
                # A cluster's time limit, `timeout` and `kill -- -<pgid>` signal the whole group, as here.
                os.killpg(os.getpgrp(), self.signum) if self.group else os.kill(os.getpid(), self.signum)


class SignalAtSetup(L.Callback):
    """Send this process `signal_name` in the Trainer's set-up, before the first step (Ctrl-C while it starts)."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        self.signum = signal.Signals[signal_name]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        os.kill(os.getpid(), self.signum)


class SignallingDDIM(DDIMSampler):
    """DDIM that sends its own process `signal_name` as its first sampling starts (the run's first grid or FID
    evaluation), once: the signal lands while a callback generates. `marker` records that it was sent; under DDP
    `rank` is the one rank signalled (as `kill <pid>` does), else every rank."""

    def __init__(
        self, *args: Any, marker: str, signal_name: str = "SIGTERM", rank: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.marker = Path(marker)
        self.signum = signal.Signals[signal_name]
        self.rank = rank

    def sample(self, *args: Any, **kwargs: Any) -> Any:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if self.rank in (None, rank) and not self.marker.exists():
            self.marker.write_text("sent")
            os.kill(os.getpid(), self.signum)
        return super().sample(*args, **kwargs)
