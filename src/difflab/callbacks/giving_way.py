"""A grid or FID evaluation gives way to a stop signal (SIGTERM, the requeue signal, Ctrl-C): it is dropped at its
next sampler step and the step just trained is saved at once. Before, it ran to its end (minutes for a large FID
set, past a cluster's grace time, when SIGKILL follows) and one more training step ran before the save."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L
import torch

from ..training import CheckpointOnSignal

log = logging.getLogger("difflab")


class GaveWay(Exception):
    """Raised from a sampler step of a callback's generation once a stop signal has come."""


def signal_keeper(trainer: L.Trainer) -> CheckpointOnSignal | None:
    """The run's CheckpointOnSignal (None when the callbacks leave it out: then nothing gives way)."""
    return next((c for c in trainer.callbacks if isinstance(c, CheckpointOnSignal)), None)


def stoppable(trainer: L.Trainer, on_step: Callable[[], None]) -> Callable[[], None]:
    """on_step, then GaveWay when a stop signal has come to this process."""
    keeper = signal_keeper(trainer)
    if keeper is None:
        return on_step

    def step() -> None:
        on_step()
        if keeper.stop_requested:
            raise GaveWay

    return step


class Owed:
    """The step of a grid or FID evaluation given up for a stop signal: kept in the checkpoint saved in its place
    (the callback's state), so that the run resumed from that step makes it before training on."""

    def __init__(self) -> None:
        self.step: int | None = None

    def state(self) -> dict[str, int | None]:
        return {"owed_step": self.step}

    def load(self, state: dict) -> None:
        self.step = state.get("owed_step")

    def due(self, trainer: L.Trainer) -> bool:
        """True once, at the first batch of the run resumed from the owed step (on every rank alike)."""
        due = self.step is not None and self.step == trainer.global_step
        self.step = None
        return due


def gave_way(trainer: L.Trainer, mine: bool, what: str, owed: Owed | None = None) -> bool:
    """True when the work `what` gave way on any rank (`mine`: on this one); the step is saved then (and the run
    stops, or goes on, as the signal asks), `owed` recording it. Every rank calls it once, after its share and
    before any collective of the work: under DDP the ranks agree in one all-reduce, so none waits in a gather the
    others left."""
    keeper = signal_keeper(trainer)
    if keeper is None:
        return False
    anywhere = mine
    if trainer.world_size > 1:
        flag = torch.tensor(int(mine), dtype=torch.int32, device=trainer.strategy.root_device)
        anywhere = bool(trainer.strategy.reduce(flag, reduce_op="sum").item())
    if not anywhere:
        return False
    if trainer.is_global_zero:
        log.warning(
            "%s at step %d given up for a stop signal: saving the step first", what, trainer.global_step
        )
    if owed is not None:
        owed.step = trainer.global_step
    keeper.save_now(trainer)
    return True
