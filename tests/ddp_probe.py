"""A callback for the DDP test: each rank writes the weights it ends with, so the test can compare ranks."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from difflab.training.ema import ema_network


class RankProbe(L.Callback):
    """At the end of training, save this rank's raw and EMA weights to <dirpath>/rank<r>.pt."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        state = {
            "raw": {k: v.detach().cpu().clone() for k, v in pl_module.net.state_dict().items()},
            "ema": {
                k: v.detach().cpu().clone() for k, v in ema_network(trainer, pl_module).state_dict().items()
            },
            "world_size": trainer.world_size,
        }
        torch.save(state, self.dirpath / f"rank{trainer.global_rank}.pt")
