"""Log a grid of samples from fixed noise every N steps, so the progress of one run is comparable."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torch import Tensor

from ..generation import grid_tiles
from ..generation.finite import guidance_too_large
from ..io.write_images import enlarge, grid_of, save_png
from ..training.finite import HINT, NonFiniteError, check_losses_so_far
from .giving_way import GaveWay, Owed, gave_way, stoppable
from .progress_bar import busy
from .rank_share import GeneratingCallback, SamplerFactory
from .sharding import gather_in_index_order

log = logging.getLogger("difflab")


class SampleGrid(GeneratingCallback):
    """Every `every_n_steps` optimizer steps and at the end of training: sample `num_samples` images with
    the EMA weights from the same noise, write `<dirpath>/step_XXXXXXX.png` and log the grid to every
    logger that takes images. The work is split across DDP ranks (each rank samples its own indices).
    A conditional model's grid is balanced over its conditions (one row per class, or per fixed prompt of a
    text-to-image run), sampled with classifier-free guidance of scale `guidance`; a super-resolution model's
    grid shows the low-res versions of the first held-out images beside their super-resolved outputs."""

    def __init__(
        self,
        sampler: SamplerFactory,
        dirpath: str,
        every_n_steps: int = 500,
        num_samples: int = 64,
        seed: int = 0,
        batch_size: int = 64,
        guidance: float = 1.0,
        precision: str = "fp32",
        guide: str | None = None,
    ) -> None:
        super().__init__(sampler, num_samples, seed, batch_size, guidance, precision, guide)
        self.dirpath = Path(dirpath)
        self.every_n_steps = int(every_n_steps)
        self._last_step = -1
        self._last_path: Path | None = None  # rank 0's file of the grid drawn at _last_step
        self._owed = Owed()

    def state_dict(self) -> dict[str, Any]:
        return self._owed.state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._owed.load(state_dict)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if self._owed.due(trainer):
            step = trainer.global_step
            if trainer.is_global_zero:
                log.info("sample grid step_%07d, given up for a stop signal, made now", step)
            self.log_grid(trainer, pl_module, f"step_{step:07d}")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        step = trainer.global_step
        # step > 0: with gradient accumulation the first micro-batches end before the first optimizer step.
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.log_grid(trainer, pl_module, f"step_{step:07d}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_step == trainer.global_step:
            # Drawn at this very step, from these very weights and noise: final.png is that grid (same decision on
            # every rank, so none waits for a gather that does not come).
            if self._last_path is not None:
                shutil.copyfile(self._last_path, self.dirpath / "final.png")
            return
        self.log_grid(trainer, pl_module, "final")

    @torch.no_grad()
    def log_grid(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> Path | None:
        """Sample the grid (sharded over ranks), then write and log it from rank 0 (None elsewhere, and when a stop
        signal made it give way: callbacks.giving_way)."""
        self._last_step = trainer.global_step
        check_losses_so_far(pl_module)  # a diverged loss is named as such, before its weights are sampled
        task = trainer.datamodule.generation_task(self.num_samples)
        with (
            self.my_share(trainer, pl_module, task) as generation,
            busy(trainer, f"sample grid {name}", generation.steps) as on_step,
        ):
            try:
                mine = generation.images(stoppable(trainer, on_step))
            except GaveWay:
                mine = None
        if gave_way(trainer, mine is None, f"sample grid {name}", self._owed if name != "final" else None):
            return None
        images = gather_in_index_order(trainer, mine)
        request = generation.request
        if not bool(torch.isfinite(images).all()):  # every rank holds all images: all raise together
            cause = guidance_too_large(request.guidance) or f"the EMA network has diverged; {HINT}"
            raise NonFiniteError(
                f"sample grid {name} at step {trainer.global_step} has non-finite pixels: {cause}"
            )
        if not trainer.is_global_zero:
            return None
        # Native pixels, enlarged by an integer factor to be visible; SR: input | output pairs.
        grid = enlarge(grid_of(*grid_tiles(request.conditions, images)))
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"{name}.png"
        save_png(grid, path)
        net = getattr(generation.net, "net", generation.net)  # under an EDM/flow ε-face
        weights = "EMA" if net is not pl_module.net else "raw"
        sampler = request.method.sampler
        caption = (
            f"step {trainer.global_step} · {type(sampler).__name__} · NFE {sampler.nfe} · {weights} weights"
        )
        self._log_to_loggers(trainer, grid, caption)
        self._last_path = path
        return path

    def _log_to_loggers(self, trainer: L.Trainer, grid: Tensor, caption: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                image = grid.permute(1, 2, 0).numpy()
                logger.log_image("samples", images=[image], step=trainer.global_step, caption=[caption])
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", grid, trainer.global_step)
