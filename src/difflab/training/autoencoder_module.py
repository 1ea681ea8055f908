"""AutoencoderModule: trains LDM's KL autoencoder on images with an L1 reconstruction loss and a weak KL term."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from ..evaluation.reconstruction import psnr
from ..models.autoencoder import AutoencoderKL
from .finite import LossWatch, check_checkpoint_weights, check_losses_so_far
from .module import OptimizerFactory, SchedulerFactory


class AutoencoderModule(L.LightningModule):
    """loss = Σ|x − D(z)| + kl_weight · KL(q(z|x) ‖ N(0, I)), both summed over each sample and averaged over the
    batch, z a posterior draw: LDM's weighting (its kl_weight 1e-6 is relative to a per-sample sum), without the
    perceptual loss, whose LPIPS weights cannot be downloaded here. Validation decodes the posterior mean and
    logs val/l1 (per pixel), val/psnr and val/loss.

    The module holds the autoencoder as `net` (as DiffusionModule holds its denoiser) so checkpoints, parameter
    counts and the EMA callback see the same names.
    """

    def __init__(
        self,
        net: AutoencoderKL,
        optimizer: OptimizerFactory,
        lr_scheduler: SchedulerFactory | None = None,
        kl_weight: float = 1e-6,
        loss_check_every_n_steps: int = 20,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0 (got {kl_weight})")
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.kl_weight = float(kl_weight)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler or None  # lr_scheduler=none composes to an empty config
        self.loss_watch = LossWatch(loss_check_every_n_steps)

    def losses(self, x: Tensor, sample_posterior: bool) -> dict[str, Tensor]:
        """The loss and its parts for a batch of images x in [-1, 1]."""
        recon, posterior = self.net(x, sample_posterior=sample_posterior)
        error = (x - recon).abs()
        kl = posterior.kl().mean()
        loss = error.flatten(1).sum(dim=1).mean() + self.kl_weight * kl
        return {"loss": loss, "l1": error.mean(), "kl": kl, "psnr": psnr(recon, x).mean()}

    def training_step(self, batch: tuple[Tensor, Any], batch_idx: int) -> Tensor:
        parts = self.losses(batch[0], sample_posterior=True)
        self.loss_watch.record(parts["loss"], self.global_step)  # checked in on_before_optimizer_step
        self.log("train/loss", parts["loss"], prog_bar=True)
        self.log_dict({"train/l1": parts["l1"], "train/kl": parts["kl"]})
        return parts["loss"]

    def validation_step(self, batch: tuple[Tensor, Any], batch_idx: int) -> None:
        parts = self.losses(batch[0], sample_posterior=False)  # the mean: a deterministic score of one run
        values = {f"val/{name}": value for name, value in parts.items()}
        self.log_dict(values, prog_bar=False, sync_dist=True, batch_size=batch[0].shape[0])

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.loss_watch.due(self.global_step, self.trainer.max_steps):
            self.loss_watch.check(self.trainer)

    def on_train_end(self) -> None:
        check_losses_so_far(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_losses_so_far(self)
        check_checkpoint_weights(checkpoint)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.net.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
