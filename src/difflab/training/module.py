"""DiffusionModule: the noise schedule, the denoiser and the diffusion loss as a LightningModule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from ..diffusion import DiffusionLoss, NoiseSchedule
from .finite import check_checkpoint_weights, check_loss

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class DiffusionModule(L.LightningModule):
    """Trains `net` to predict ε (or x_0, v) from (x_t, t); EMA weights come from the EMA callback.

    The random draws of a training step (t, ε, dropout) come from torch's global generators, which the
    `SeedEachStep` callback reseeds before each micro-batch; data augmentation happens in the datamodule.
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: NoiseSchedule,
        optimizer: OptimizerFactory,
        lr_scheduler: SchedulerFactory | None = None,
        prediction_type: str = "epsilon",
        val_seed: int = 1234,
    ) -> None:
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.loss_fn = DiffusionLoss(schedule, prediction_type)
        self.prediction_type = prediction_type
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.val_seed = val_seed

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.net(x_t, t)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss_fn(self.net, batch[0])
        check_loss(loss, self.global_step, self.trainer)  # before backward: NaN never reaches the weights
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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning calls this after the callbacks (the EMA has put its weights in), on every rank.
        check_checkpoint_weights(checkpoint)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.net.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
