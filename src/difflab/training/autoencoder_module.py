"""AutoencoderModule: trains LDM's KL autoencoder on images with an L1 reconstruction loss and a weak KL term,
and optionally a patch discriminator's adversarial loss after a warm-up step (off by default)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from ..evaluation.reconstruction import psnr
from ..models.autoencoder import AutoencoderKL
from ..models.patch_discriminator import PatchDiscriminator
from .clipping import ClipsFusedUnderBf16
from .finite import LossWatch, check_checkpoint_weights, check_losses_so_far
from .lr_schedules import set_the_scheduled_lr
from .module import OptimizerFactory, SchedulerFactory
from .validation_log import ValidationLoggedAtItsStep


class AutoencoderModule(ClipsFusedUnderBf16, ValidationLoggedAtItsStep):
    """loss = Σ|x − D(z)| + kl_weight · KL(q(z|x) ‖ N(0, I)), both summed over each sample and averaged over the
    batch, z a posterior draw: LDM's weighting (its kl_weight 1e-6 is relative to a per-sample sum), without the
    perceptual loss, whose LPIPS weights cannot be downloaded here. Validation decodes the posterior mean and
    logs val/l1 (per pixel), val/psnr and val/loss.

    The module holds the autoencoder as `net` (as DiffusionModule holds its denoiser) so checkpoints, parameter
    counts and the EMA callback see the same names.

    disc_weight > 0 adds LDM's adversarial loss from optimizer step `disc_start` on: a PatchGAN discriminator with a
    hinge loss, its generator term weighted adaptively (‖∇nll‖ / ‖∇g‖ at the decoder's last layer, times
    disc_weight). Both nets train in one optimizer step: the generator term sees the discriminator's weights
    detached and the discriminator sees detached reconstructions, so automatic optimisation (gradient clipping,
    accumulation, one global step per batch) works as for any run.
    """

    def __init__(
        self,
        net: AutoencoderKL,
        optimizer: OptimizerFactory,
        lr_scheduler: SchedulerFactory | None = None,
        kl_weight: float = 1e-6,
        loss_check_every_n_steps: int = 20,
        channels_last: bool = True,
        disc_weight: float = 0.0,
        disc_start: int = 50001,
        disc_layers: int = 3,
    ) -> None:
        super().__init__()
        if kl_weight < 0 or disc_weight < 0:
            raise ValueError(f"kl_weight and disc_weight must be >= 0 (got {kl_weight}, {disc_weight})")
        self.disc_weight, self.disc_start = float(disc_weight), int(disc_start)
        in_channels = net.encoder.conv_in.in_channels
        self.discriminator = PatchDiscriminator(in_channels, layers=disc_layers) if disc_weight > 0 else None
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

    def adversarial_losses(self, x: Tensor, recon: Tensor, nll: Tensor) -> dict[str, Tensor]:
        """The weighted generator term (gradients to the autoencoder only) and the discriminator's hinge loss
        (gradients to the discriminator only)."""
        assert self.discriminator is not None
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        g_loss = -functional_call(self.discriminator, frozen, (recon,)).mean()
        last = self.net.decoder.conv_out.weight
        nll_grad = torch.autograd.grad(nll, last, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
        weight = (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach() * self.disc_weight
        real, fake = self.discriminator(x), self.discriminator(recon.detach())
        d_loss = 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())
        return {"g_loss": g_loss, "g_weight": weight, "d_loss": d_loss}

    def training_step(self, batch: tuple[Tensor, Any], batch_idx: int) -> Tensor:
        if self.discriminator is not None and self.global_step >= self.disc_start:
            return self.adversarial_step(batch[0])
        parts = self.losses(batch[0], sample_posterior=True)
        self.loss_watch.record(parts["loss"], self.global_step)  # checked in on_before_optimizer_step
        self.log("train/loss", parts["loss"], prog_bar=True)
        self.log_dict({"train/l1": parts["l1"], "train/kl": parts["kl"]})
        return parts["loss"]

    def adversarial_step(self, x: Tensor) -> Tensor:
        """A training step with the discriminator on: reconstruction + KL + weighted generator term, plus the
        discriminator's own loss (their gradients never mix)."""
        recon, posterior = self.net(x, sample_posterior=True)
        nll = (x - recon).abs().flatten(1).sum(dim=1).mean()
        kl = posterior.kl().mean()
        adversarial = self.adversarial_losses(x, recon, nll)
        loss = (
            nll
            + self.kl_weight * kl
            + adversarial["g_weight"] * adversarial["g_loss"]
            + adversarial["d_loss"]
        )
        self.loss_watch.record(loss, self.global_step)
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({"train/l1": (x - recon).abs().mean(), "train/kl": kl})
        self.log_dict({f"train/{name}": value for name, value in adversarial.items()})
        return loss

    def validation_step(self, batch: tuple[Tensor, Any], batch_idx: int) -> None:
        parts = self.losses(batch[0], sample_posterior=False)  # the mean: a deterministic score of one run
        values = {f"val/{name}": value for name, value in parts.items()}
        self.log_validation(values, batch_size=batch[0].shape[0])

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.loss_watch.due(self.global_step, self.trainer.max_steps):
            self.loss_watch.check(self.trainer)

    def on_train_end(self) -> None:
        check_losses_so_far(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_losses_so_far(self)
        check_checkpoint_weights(checkpoint)

    @staticmethod
    def strategy_for(strategy: Any, disc_weight: float, processes: int) -> Any:
        """The Trainer strategy that trains this module on `processes` processes: with the discriminator on, DDP's
        variant that finds unused parameters, as the discriminator has no gradient before disc_start (plain DDP
        stops at that step with "parameters that were not used in producing the loss"). Left unused on every rank,
        its weights are then untouched, as in one process. "auto" on several processes is plain DDP in Lightning.
        Any other strategy is kept."""
        plain_ddp = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")
        if strategy in (None, "auto") and processes > 1:
            strategy = "ddp"
        if disc_weight > 0 and isinstance(strategy, str) and strategy in plain_ddp:
            return f"{strategy}_find_unused_parameters_true"
        return strategy

    def on_train_start(self) -> None:
        set_the_scheduled_lr(self.trainer)  # a resume's restored LR is the old schedule's

    def configure_optimizers(self) -> Any:
        groups = [{"params": list(self.net.parameters())}]
        if self.discriminator is not None:
            groups.append({"params": list(self.discriminator.parameters())})
        optimizer = self.optimizer_factory(groups)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
