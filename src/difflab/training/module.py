"""DiffusionModule: the noise schedule, the denoiser and the diffusion loss as a LightningModule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from ..diffusion import DiffusionLoss, NoiseSchedule
from .rng import random_hflip, seed_step

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class DiffusionModule(L.LightningModule):
    """Trains `net` to predict ε (or x_0, v) from (x_t, t); EMA weights come from the EMA callback.

    Every random draw of a training step (t, ε, dropout, the optional horizontal flip) comes from torch's
    global generators, reseeded before each micro-batch from (seed, global step, micro-batch, global rank):
    each DDP rank draws differently, and a resumed run draws exactly what an uninterrupted one would.
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: NoiseSchedule,
        optimizer: OptimizerFactory,
        lr_scheduler: SchedulerFactory | None = None,
        prediction_type: str = "epsilon",
        val_seed: int = 1234,
        seed: int = 0,
        random_flip: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.loss_fn = DiffusionLoss(schedule, prediction_type)
        self.prediction_type = prediction_type
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.val_seed = val_seed
        self.seed = seed
        self.random_flip = random_flip
        self._rng_step, self._rng_micro = -1, 0  # which micro-batch of which optimizer step is running

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.net(x_t, t)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Counted here rather than from batch_idx: Lightning's epoch bookkeeping may restart batch_idx at 0
        # after a resume, while global_step (restored) and this count (0 at a step boundary) do not move.
        if self.global_step != self._rng_step:
            self._rng_step, self._rng_micro = self.global_step, 0
        else:
            self._rng_micro += 1
        seed_step(self.seed, self.global_step, self._rng_micro, self.global_rank)
        # Lightning logs at fit_loop.epoch_loop._batches_that_stepped, which equals global_step with one
        # optimizer; but resuming from a checkpoint written when training ended right after a validation,
        # Lightning 2.6 counts the skipped re-validation as a step and every later point lands one step late.
        epoch_loop = self.trainer.fit_loop.epoch_loop
        if hasattr(epoch_loop, "_batches_that_stepped"):
            epoch_loop._batches_that_stepped = self.global_step

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x0 = random_hflip(batch[0]) if self.random_flip else batch[0]
        loss = self.loss_fn(self.net, x0)
        self.log("train/loss", loss, prog_bar=True)
        # Logged here rather than by LearningRateMonitor so it works with logger=none too.
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        # Fixed t and noise per batch, so the validation loss of one run is comparable across steps.
        x0 = batch[0]
        g = torch.Generator(device=x0.device).manual_seed(self.val_seed + batch_idx)
        loss = self.loss_fn(self.net, x0, generator=g)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=x0.shape[0])

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.net.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
