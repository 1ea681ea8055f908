"""EMA of the weights: Lightning's WeightAveraging with a decay that warms up from 0."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..compat import (
    average_on_device,
    averaged_model,
    latest_update_step,
    set_averaged_model,
    set_latest_update_step,
)
from .sharded_checkpoint import ShardedEntry
from .sharding import full_state, is_sharded, load_full_state, reshard, sharded_state


def local(tensor: Tensor) -> Tensor:
    """This rank's shard of a sharded (DTensor) parameter, the tensor itself otherwise: the EMA lerps shards."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def warmup_decay(decay: float, num_updates: int, warmup: bool) -> float:
    """min(decay, (1 + n) / (10 + n)): early averages forget the random init fast (TF's EMA warm-up)."""
    return min(decay, (1 + num_updates) / (10 + num_updates)) if warmup else decay


class EMA(WeightAveraging):
    """Exponential moving average, updated after every optimizer step.

    The checkpoint's `state_dict` holds the averaged weights (what sampling uses); the raw weights and the
    update count are kept beside them for exact resume. Validation runs on the averaged weights.

    The update is one foreach lerp over tensor lists gathered once per fit: torch's
    AveragedModel.update_parameters walks the module tree and reads its update count from the device every step,
    which cost a small net more than the arithmetic (profiled on the digits net: about 8 ms per step of which 1.2 ms
    was the lerp).

    Under trainer=fsdp the average is sharded exactly like the weights (each rank lerps its own shards), a
    checkpoint holds the full averaged weights gathered on rank 0 (sample.py reads it as any other) or, with
    state_dict_type=sharded, each rank's shards of them beside those of the raw weights, and sampling
    callbacks get a full unsharded copy on every rank (ranks may sample different numbers of batches).
    """

    def __init__(self, decay: float = 0.9999, warmup: bool = True, update_every: int = 1) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1) (got {decay})")
        self.decay = decay
        self.warmup = warmup
        self.update_every = max(1, int(update_every))
        super().__init__(use_buffers=True)
        self._tensors: tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]] | None = None
        self._updates = 0
        self._skeleton: nn.Module | None = None  # trainer=fsdp: the net's structure on the meta device

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._shard_like_weights(trainer, pl_module)
        super().on_train_start(trainer, pl_module)
        self._tensors = None  # gathered again at the first update, after any checkpoint has been restored

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # As WeightAveraging's: step_idx is zero-based, one update per optimizer step (not per micro-batch).
        if trainer.global_step > latest_update_step(self) and self.should_update(trainer.global_step - 1):
            self._update(pl_module)
            set_latest_update_step(self, trainer.global_step)

    def _update(self, pl_module: L.LightningModule) -> None:
        average = averaged_model(self)
        assert average is not None
        if self._tensors is None:
            self._updates = int(average.n_averaged)  # the one read from the device per fit
            pairs = zip(
                [*average.module.parameters(), *average.module.buffers()],
                [*pl_module.parameters(), *pl_module.buffers()],
                strict=True,
            )
            pairs = [(local(a.detach()), local(c.detach())) for a, c in pairs]
            floats = [(a, c) for a, c in pairs if a.is_floating_point()]
            self._tensors = (
                [a for a, _ in pairs],
                [c for _, c in pairs],
                [a for a, _ in floats],
                [c for _, c in floats],
            )
        every_avg, every_cur, float_avg, float_cur = self._tensors
        if self._updates == 0:
            for average_tensor, current in zip(every_avg, every_cur, strict=True):
                average_tensor.copy_(current)  # the first update copies, as AveragedModel's does
        elif float_avg:
            # torch's own EMA step (one foreach lerp), built for this update's warmed-up decay.
            get_ema_multi_avg_fn(warmup_decay(self.decay, self._updates, self.warmup))(
                float_avg, float_cur, None
            )
        average.n_averaged += 1
        self._updates += 1

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx % self.update_every == 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning calls setup before moving the module to its device; keep the average on the
        # training device so each update is a device-local lerp, not a copy to the CPU.
        average_on_device(self, trainer.strategy.root_device)
        if stage != "fit" or not hasattr(trainer.strategy, "shard"):
            super().setup(trainer, pl_module, stage)
            return
        # FSDP: copy before configure_model shards the net (a sharded module cannot be deep-copied); the copy is
        # sharded the same way in _shard_like_weights. A weightless copy of the net's structure is kept too, to
        # gather the full average into for sampling.
        set_averaged_model(
            self, AveragedModel(pl_module, device=trainer.strategy.root_device, use_buffers=True)
        )
        self._skeleton = copy.deepcopy(pl_module.net).to("meta")

    def _shard_like_weights(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Shard the average as the strategy has sharded the weights (once; nothing to do without sharding)."""
        average = averaged_model(self)
        if average is not None and is_sharded(pl_module) and not is_sharded(average.module):
            trainer.strategy.shard(average.module.net)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        average = averaged_model(self)
        if average is None or not is_sharded(average.module):
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
            return
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        if getattr(trainer.strategy, "state_dict_type", "full") == "sharded":
            # The strategy has put this rank's shards of the raw weights in "state_dict": the average's go beside
            # them, and every rank writes its own (WeightAveraging's layout, sharded).
            checkpoint["state_dict"] = sharded_state(average.module)
        else:
            # The strategy has put the full raw weights in "state_dict" on rank 0 ({} elsewhere): gather the full
            # average on every rank (a collective) and keep it on rank 0, in WeightAveraging's layout.
            averaged = full_state(average.module)
            checkpoint["state_dict"] = averaged if trainer.is_global_zero else {}
        checkpoint["averaging_state"] = {"n_averaged": average.n_averaged.detach().cpu().clone()}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        average = averaged_model(self)
        if average is None or not is_sharded(pl_module):
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
            return
        # The strategy has already loaded the file's "state_dict" (the average) into the sharded weights: copy
        # those shards into the average, then load the raw weights from "current_model_state".
        self._shard_like_weights(trainer, pl_module)
        with torch.no_grad():
            pairs = zip(average.module.parameters(), pl_module.parameters(), strict=True)
            for average_tensor, current in pairs:
                local(average_tensor).copy_(local(current))
            average.n_averaged.copy_(checkpoint["averaging_state"]["n_averaged"])
        raw = checkpoint["current_model_state"]
        if isinstance(raw, ShardedEntry):  # a sharded checkpoint: each rank reads its own shards
            raw.load_into(pl_module)
        else:
            load_full_state(pl_module, raw)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._swap_shards(pl_module):
            return
        super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._swap_shards(pl_module):
            return
        super().on_validation_epoch_end(trainer, pl_module)

    def _swap_shards(self, pl_module: L.LightningModule) -> bool:
        """Under FSDP, swap this rank's shards of the raw and averaged weights (validation runs on the average);
        False (nothing done) without sharding. An eval forward leaves the root's weights gathered: reshard first."""
        average = averaged_model(self)
        if average is None or not is_sharded(average.module):
            return False
        reshard(pl_module.net)
        reshard(average.module.net)
        with torch.no_grad():
            pairs = zip(
                [*average.module.parameters(), *average.module.buffers()],
                [*pl_module.parameters(), *pl_module.buffers()],
                strict=True,
            )
            for average_tensor, current in pairs:
                a, c = local(average_tensor), local(current)
                kept = a.clone()
                a.copy_(c)
                c.copy_(kept)
        return True

    def sampling_network(self) -> nn.Module | None:
        """The averaged net to sample with: itself, or under FSDP a full unsharded copy gathered on every rank (a
        collective: every rank must ask at the same point)."""
        module = self.averaged_module()
        if module is None or not is_sharded(module.net):
            return None if module is None else module.net
        device = next(local(p) for p in module.net.parameters()).device
        assert self._skeleton is not None
        net = copy.deepcopy(self._skeleton).to_empty(device=device)
        state = full_state(module.net)
        net.load_state_dict(state)
        # A non-persistent buffer (the DiT's sin-cos position table) is in no state dict: to_empty left it
        # uninitialised. fully_shard shards parameters only, so the average holds it whole: copy it over.
        for name, buffer in module.net.named_buffers():
            if name not in state:
                net.get_buffer(name).copy_(buffer)
        return net

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning copies the average into the module here; difflab keeps the raw weights so that a
        # checkpoint written at the end of training still holds both (sampling reads the EMA state_dict).
        return None

    def averaged_module(self) -> L.LightningModule | None:
        """The LightningModule holding the averaged weights (None before fit has set it up)."""
        average = averaged_model(self)
        return None if average is None else average.module


def ema_network(trainer: L.Trainer, pl_module: Any) -> nn.Module:
    """The denoiser to sample with: the EMA copy when an EMA callback is active, else the raw one."""
    for callback in trainer.callbacks:
        if isinstance(callback, EMA) and callback.averaged_module() is not None:
            return callback.sampling_network()
    return pl_module.net
