"""Post-hoc EMA during training (EDM2): track power-function EMAs of the network at a few σ_rel and save them
as snapshots every N steps, so that `python -m difflab.phema` can rebuild the EMA of any σ_rel afterwards."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from .atomic_checkpoint_io import remove_unfinished_writes
from .phema import check_sigma_rel, sigma_rel_to_gamma, update_power_ema
from .phema_enough import planned_steps, warn_if_few_snapshots_planned
from .phema_reconstruct import set_aside_later_rebuilds
from .phema_snapshots import set_aside_later_snapshots, write_snapshot

log = logging.getLogger("difflab")


class PostHocEMA(L.Callback):
    """Power-function EMAs of `pl_module.net` at `sigma_rels`, one lerp each per optimizer step (t = the global
    step), written to `dirpath/step_<step>.pt` every `every_n_steps` steps and at the end of training.

    The averages and their step live in the checkpoint (exact resume); every rank tracks them (DDP ranks hold
    the same weights) and rank 0 writes. Snapshots from after a resumed step belong to an abandoned
    continuation and are set aside. Costs len(sigma_rels) float copies of the network on the training device;
    each snapshot file holds them all.
    """

    def __init__(
        self, dirpath: str | Path, every_n_steps: int = 250, sigma_rels: tuple[float, ...] = (0.05, 0.10)
    ) -> None:
        if int(every_n_steps) < 1:
            raise ValueError(f"phema every_n_steps must be at least 1 (got {every_n_steps})")
        if isinstance(sigma_rels, str) or not isinstance(sigma_rels, Sequence):  # e.g. sigma_rels=0.05
            raise ValueError(f"phema sigma_rels must be a list, e.g. [0.05,0.10] (got {sigma_rels!r})")
        for sigma_rel in sigma_rels:
            check_sigma_rel(float(sigma_rel))
        if len(set(sigma_rels)) < 2:
            raise ValueError(
                f"phema needs two or more different sigma_rels to reconstruct others (got {list(sigma_rels)})"
            )
        self.dirpath = Path(dirpath)
        self.every_n_steps = int(every_n_steps)
        self.sigma_rels = [float(s) for s in sigma_rels]
        self.gammas = [sigma_rel_to_gamma(s) for s in self.sigma_rels]
        self._averages: list[dict[str, Tensor]] | None = None
        self._step = 0  # the global step the averages are at
        self._snapshot_step = 0  # the last step written
        # [(step, every_n_steps)] of each launch that changed the spacing: the rebuild's check for missing
        # snapshots expects each stretch of the run at its own spacing.
        self._every_since: list[tuple[int, int]] = []
        self._restored: dict[str, Any] | None = None
        self._trainer: L.Trainer | None = None
        self._net: torch.nn.Module | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer, self._net = trainer, pl_module.net

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After a checkpoint is restored: the net holds its weights and global_step its step.
        self._net = pl_module.net
        current = self._current()
        step = trainer.global_step
        if self._restored is not None:
            self._averages = [
                {k: v.to(current[k].device) for k, v in state.items()} for state in self._restored["averages"]
            ]
            self._step, self._snapshot_step = (
                int(self._restored["step"]),
                int(self._restored["snapshot_step"]),
            )
            # Absent from checkpoints older than the record: the run is taken to have had this launch's spacing
            # from its start, as the rebuild's check took it before the record.
            recorded = self._restored.get("every_since") or [(0, self.every_n_steps)]
            self._every_since = [(int(s), int(e)) for s, e in recorded]
            self._restored = None
        else:
            self._averages = [{k: v.detach().clone() for k, v in current.items()} for _ in self.sigma_rels]
            self._step = self._snapshot_step = step
            if step > 0:
                log.warning(
                    "post-hoc EMA starts at step %d (the checkpoint has none): its profiles count the weights of "
                    "that step for every earlier one",
                    step,
                )
        if not self._every_since or self._every_since[-1][1] != self.every_n_steps:
            self._every_since.append((step, self.every_n_steps))
        if trainer.is_global_zero:
            planned = planned_steps(
                int(trainer.max_steps or 0), trainer.max_epochs, trainer.estimated_stepping_batches
            )
            warn_if_few_snapshots_planned(planned, self.every_n_steps)
            remove_unfinished_writes(self.dirpath)
            aside = set_aside_later_snapshots(self.dirpath, step) if self.dirpath.is_dir() else None
            if aside is not None:
                log.info("post-hoc EMA snapshots after step %d were set aside in %s", step, aside)
            rebuilds = self.dirpath.parent  # <run>/phema, where python -m difflab.phema writes by default
            aside = set_aside_later_rebuilds(rebuilds, step) if rebuilds.is_dir() else None
            if aside is not None:
                log.info("post-hoc EMA rebuilds of steps after %d were set aside in %s", step, aside)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._write_if_due(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # A checkpoint saved before this callback's turn in a step (a stop signal's, which then ends the run) would
        # otherwise be resumed past a snapshot step that was never written.
        self._write_if_due(trainer)

    def _write_if_due(self, trainer: L.Trainer) -> None:
        """Write the snapshot of this step when it is one of every_n_steps and not written yet."""
        self._catch_up()
        step = trainer.global_step
        if self._averages is not None and step % self.every_n_steps == 0 and step > self._snapshot_step:
            self._write(trainer, step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch_up()
        if self._averages is not None and self._step > self._snapshot_step:
            self._write(trainer, self._step)  # the final weights, so the last step can be reconstructed

    def _current(self) -> dict[str, Tensor]:
        assert self._net is not None
        return self._net.state_dict()

    def _catch_up(self) -> None:
        """Average in the weights of the optimizer steps not counted yet (once per step, also when a checkpoint
        is saved by a callback that runs before this one in the same step)."""
        if self._averages is None or self._trainer is None or self._trainer.global_step <= self._step:
            return
        current = self._current()
        previous, self._step = self._step, self._trainer.global_step
        floats = [k for k, v in current.items() if v.is_floating_point()]
        for average, gamma in zip(self._averages, self.gammas, strict=True):
            # Steps not seen one by one count with today's weights (exact when a step did not change them).
            update_power_ema(
                [average[k] for k in floats], [current[k] for k in floats], gamma, self._step, previous
            )
            for key, value in current.items():
                if not value.is_floating_point():
                    average[key].copy_(value)

    def _write(self, trainer: L.Trainer, step: int) -> None:
        self._snapshot_step = step
        if trainer.is_global_zero:
            write_snapshot(self.dirpath, step, self.sigma_rels, self._averages or [])

    def state_dict(self) -> dict[str, Any]:
        self._catch_up()
        if self._averages is None:
            return {}
        return {
            "sigma_rels": self.sigma_rels,
            "step": self._step,
            "snapshot_step": self._snapshot_step,
            "every_since": [list(pair) for pair in self._every_since],
            "averages": [{k: v.detach().cpu().clone() for k, v in a.items()} for a in self._averages],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if [float(s) for s in state_dict["sigma_rels"]] != self.sigma_rels:
            raise ValueError(
                f"callbacks.phema.sigma_rels={self.sigma_rels} but the checkpoint tracked "
                f"{list(state_dict['sigma_rels'])}; resume with the same sigma_rels"
            )
        self._restored = state_dict
