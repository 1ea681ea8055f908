"""DiffusionModule: the noise schedule, the denoiser and the diffusion loss as a LightningModule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..diffusion import NoiseSchedule
from ..diffusion.conditioning import Cond, random_drop
from ..diffusion.formulations import VPTraining
from .clipping import ClipsFusedUnderBf16
from .compile import compile_denoiser
from .finite import LossWatch, check_checkpoint_weights, check_losses_so_far
from .lr_schedules import set_the_scheduled_lr
from .validation_log import ValidationLoggedAtItsStep

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class DiffusionModule(ClipsFusedUnderBf16, ValidationLoggedAtItsStep):
    """Trains `net` as its formulation says (VP: ε, x_0 or v from (x_t, t); EDM; flow); EMA weights come from
    the EMA callback.

    A batch is (images, condition): the condition is a dict (see difflab.diffusion.conditioning) when the
    datamodule serves a conditional task, and each sample's labels/text are dropped with `cond_drop_prob`,
    so the same net also learns the unconditional prediction that classifier-free guidance needs. Anything
    else in that place (the labels of an unconditional run) is ignored.

    The random draws of a training step (t, ε, dropout, condition dropout) come from torch's global
    generators, which the `SeedEachStep` callback reseeds before each micro-batch; data augmentation happens
    in the datamodule.

    A non-finite loss stops training with NonFiniteError naming its step; the loss is noted on the device and
    looked at every `loss_check_every_n_steps` optimizer steps and before anything is written (see LossWatch).
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: NoiseSchedule,
        optimizer: OptimizerFactory,
        lr_scheduler: SchedulerFactory | None = None,
        prediction_type: str = "epsilon",
        val_seed: int = 1234,
        cond_drop_prob: float = 0.1,
        loss_check_every_n_steps: int = 20,
        channels_last: bool = True,
        compile: bool | str = False,
        formulation: Any = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= cond_drop_prob <= 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1] (got {cond_drop_prob})")
        self.cond_drop_prob = cond_drop_prob
        # NHWC activations let oneDNN (CPU) and cuDNN (GPU, bf16) pick faster convolution kernels: about 1.2x on
        # a training step here (benchmarks/unet_vs_diffusers.py). Parameters keep their layout through
        # load_state_dict, the EMA copy and the optimizer state; only the strides change, never a value.
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.compile_net = compile
        self.schedule = schedule
        # The formulation (conf/formulation/) draws the noise levels, builds inputs and targets and weights the
        # loss; None is today's VP training on `schedule` (checkpoints from before formulations).
        self.formulation = formulation if formulation is not None else VPTraining(schedule, prediction_type)
        self.loss_fn = self.formulation.loss
        # EDM2's learned loss weighting u(σ) (formulation.weighting=learned): a submodule, so the optimizer trains it
        # and checkpoints save it beside the net; sampling reads only the net.
        self.loss_weighting = getattr(self.formulation, "uncertainty", None)
        self.prediction_type = prediction_type
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler or None  # lr_scheduler=none composes to an empty config
        self.val_seed = val_seed
        self.loss_watch = LossWatch(loss_check_every_n_steps)

    @classmethod
    def load_from_checkpoint(cls, *args: Any, **kwargs: Any) -> DiffusionModule:  # type: ignore[override]
        """Not supported: the module holds objects (optimizer factories) a checkpoint does not store as data, and
        Lightning's loader would unpickle. Refused in one line that names the ways in."""
        raise NotImplementedError(
            "DiffusionModule.load_from_checkpoint is not supported: use difflab.load(path) for the model "
            "(weights-only, EMA weights, schedule) or train.py ckpt_path=<path> to resume training"
        )

    def forward(self, x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        return self.net(x_t, t, cond)

    def denoiser(self, cond: Cond | None):
        """The net as the loss calls it, model(x_t, t), with this batch's conditions bound."""
        return self.net if cond is None else (lambda x_t, t: self.net(x_t, t, cond))

    @staticmethod
    def condition(batch: tuple[Tensor, Any]) -> Cond | None:
        return batch[1] if len(batch) > 1 and isinstance(batch[1], dict) else None

    def training_step(self, batch: tuple[Tensor, Any], batch_idx: int) -> Tensor:
        cond = self.condition(batch)
        if cond is not None:
            cond = random_drop(cond, self.cond_drop_prob)
        loss = self.loss_fn(self.denoiser(cond), batch[0])
        self.loss_watch.record(loss, self.global_step)  # no host sync: checked in on_before_optimizer_step
        self.log("train/loss", loss, prog_bar=True)
        # Logged here rather than by LearningRateMonitor so it works with logger=none too; only on the steps
        # the loggers write (each self.log costs about a millisecond of Python, 1-2 % of a small net's step).
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def validation_step(self, batch: tuple[Tensor, Any], batch_idx: int) -> None:
        # Fixed t and noise per batch, so the validation loss of one run is comparable across steps; the
        # conditional loss (no dropout) for a conditional net.
        x0 = batch[0]
        g = torch.Generator(device=x0.device).manual_seed(self.val_seed + batch_idx)
        loss = self.loss_fn(self.denoiser(self.condition(batch)), x0, generator=g)
        self.log_validation({"val/loss": loss}, batch_size=x0.shape[0], prog_bar=True)

    def configure_model(self) -> None:
        # trainer=fsdp: shard the net block by block (training.sharding); no other strategy has `shard`.
        shard = getattr(self.trainer.strategy, "shard", None)
        if shard is not None:
            shard(self.net)

    def on_fit_start(self) -> None:
        # After the EMA callback's setup has copied the net: the average stays an uncompiled copy (a compiled
        # forward is bound to the module it was compiled from, so a later deepcopy would call the original).
        compile_denoiser(self.net, self.compile_net)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Every rank reaches it at the same step. A NaN found here stops before this step's update.
        if self.loss_watch.due(self.global_step, self.trainer.max_steps):
            self.loss_watch.check(self.trainer)

    def on_train_end(self) -> None:
        check_losses_so_far(self)  # the last steps of a run that ends by epochs rather than max_steps

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning calls this after the callbacks (the EMA has put its weights in), on every rank. A non-finite
        # loss is reported as such (naming its step) before the weight check, which keeps NaN off the disk.
        check_losses_so_far(self)
        check_checkpoint_weights(checkpoint)

    def on_train_start(self) -> None:
        set_the_scheduled_lr(self.trainer)  # a resume's restored LR is the old schedule's

    def configure_optimizers(self) -> Any:
        learned = self.loss_weighting.parameters() if self.loss_weighting is not None else ()
        optimizer = self.optimizer_factory([*self.net.parameters(), *learned])
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
