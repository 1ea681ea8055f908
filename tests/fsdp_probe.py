"""A callback for the FSDP test: an EMA of the full (gathered) raw weights, computed without sharding, as the
reference the sharded EMA must equal."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
from torch.optim.swa_utils import get_ema_multi_avg_fn

from difflab.training.ema import EMA, warmup_decay
from difflab.training.sharding import full_state


class UnshardedEMAReference(L.Callback):
    """After every optimizer step, gather the raw weights on every rank and average them as EMA does, on full
    tensors; rank 0 writes the result to <dirpath>/reference.pt at the end of training."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.reference: dict[str, torch.Tensor] | None = None
        self.updates = 0
        self.last_step = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step == self.last_step:  # a micro-batch of gradient accumulation: no update yet
            return
        self.last_step = trainer.global_step
        (ema,) = [c for c in trainer.callbacks if isinstance(c, EMA)]
        current = full_state(pl_module.net)  # every rank, same order: a collective
        if self.reference is None:
            self.reference = {k: v.clone() for k, v in current.items()}
        else:
            keys = [k for k, v in self.reference.items() if v.is_floating_point()]
            decay = warmup_decay(ema.decay, self.updates, ema.warmup)
            get_ema_multi_avg_fn(decay)([self.reference[k] for k in keys], [current[k] for k in keys], None)
        self.updates += 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            torch.save({"ema": self.reference, "updates": self.updates}, self.dirpath / "reference.pt")


class LoadedState(L.Callback):
    """When training starts (after a resume has loaded its checkpoint), gather the raw weights, the EMA and the
    optimizer state on every rank; rank 0 writes them, the global step, the epoch and the batch position to
    <dirpath>/loaded.pt."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        (ema,) = [c for c in trainer.callbacks if isinstance(c, EMA)]
        average = ema.averaged_module()
        assert average is not None
        raw, averaged = full_state(pl_module), full_state(average)  # collectives: every rank, same order
        (optimizer,) = trainer.optimizers
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        optimizer_state = get_optimizer_state_dict(pl_module, optimizer, options=options)  # keyed by name
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            state = {
                "global_step": trainer.global_step,
                "epoch": trainer.current_epoch,
                "batches": trainer.fit_loop.epoch_loop.batch_progress.total.completed,
                "raw": raw,
                "ema": averaged,
                "optimizer": optimizer_state,
            }
            torch.save(state, self.dirpath / "loaded.pt")


class SamplingNetBuffers(L.Callback):
    """At the end of training, the full EMA copy every rank gathers to sample with (a collective) and the net's own
    buffers; rank 0 writes both to <dirpath>/buffers.pt."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        (ema,) = [c for c in trainer.callbacks if isinstance(c, EMA)]
        sampling = ema.sampling_network()
        assert sampling is not None
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            state = {
                "sampling": {k: v.detach().cpu() for k, v in sampling.named_buffers()},
                "net": {k: v.detach().cpu() for k, v in pl_module.net.named_buffers()},
            }
            torch.save(state, self.dirpath / "buffers.pt")
