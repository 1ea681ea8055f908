"""Write and log a grid of held-out images beside their reconstructions (input | reconstruction) every N steps."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torch import Tensor

from ..io.write_images import enlarge, grid_of, save_png
from ..training.finite import check_losses_so_far


def side_by_side(images: Tensor, reconstructions: Tensor) -> Tensor:
    """[x0, r0, x1, r1, …]: each input followed by its reconstruction, so an even row width pairs them."""
    return torch.stack([images, reconstructions], dim=1).flatten(0, 1)


class ReconstructionGrid(L.Callback):
    """Every `every_n_steps` optimizer steps and at the end: the first `num_images` held-out images and their
    reconstructions from the posterior mean, written to `<dirpath>/step_XXXXXXX.png` (and final.png) as pairs,
    four pairs a row, and logged to every logger that takes images. Rank 0 only: a few images, no collective."""

    def __init__(self, dirpath: str, every_n_steps: int = 500, num_images: int = 32) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps = int(every_n_steps)
        self.num_images = int(num_images)
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.write_grid(trainer, pl_module, f"step_{step:07d}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write_grid(trainer, pl_module, "final")

    @torch.no_grad()
    def write_grid(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> Path | None:
        """Reconstruct the fixed held-out images with the current weights; write and log the grid (rank 0)."""
        self._last_step = trainer.global_step
        # On every rank: under DDP the loss check is a collective (a diverged loss is named before any grid).
        check_losses_so_far(pl_module)
        if not trainer.is_global_zero:
            return None
        held_out = trainer.datamodule.dataset_for("val")
        count = min(self.num_images, len(held_out))
        images = torch.stack([held_out[i][0] for i in range(count)]).to(pl_module.device)
        was_training = pl_module.net.training
        pl_module.net.eval()
        reconstructions = pl_module.net(images, sample_posterior=False)[0]
        pl_module.net.train(was_training)
        grid = enlarge(grid_of(side_by_side(images, reconstructions), nrow=8))
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"{name}.png"
        save_png(grid, path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                caption = f"step {trainer.global_step} · input | reconstruction"
                image = grid.permute(1, 2, 0).numpy()
                logger.log_image(
                    "reconstructions", images=[image], step=trainer.global_step, caption=[caption]
                )
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("reconstructions", grid, trainer.global_step)
        return path
