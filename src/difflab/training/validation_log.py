"""Validation metrics logged at the step their weights have: after N optimizer steps, at N, as the FID callback's
scores of the same weights and the checkpoint named after them. Lightning logs a validation that runs inside a
training step at that step's 0-based index (N-1), so W&B and metrics.jsonl drew val/loss one step before val/fd."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import Tensor


class ValidationLoggedAtItsStep(L.LightningModule):
    """A LightningModule base whose `log_validation` values reach the loggers once per validation, at the global
    step (averaged over batches and ranks as `self.log(sync_dist=True)` does; also on the progress bar)."""

    def log_validation(self, values: dict[str, Tensor], batch_size: int, prog_bar: bool = False) -> None:
        self.log_dict(values, prog_bar=prog_bar, sync_dist=True, batch_size=batch_size, logger=False)
        self._validation_names().update(values)

    def on_validation_end(self) -> None:
        # Only the names this validation logged: callback_metrics keeps an earlier validation's values.
        names, self._logged_by_validation = self._validation_names(), set()
        if self.trainer.sanity_checking or not names:
            return
        metrics = self.trainer.callback_metrics
        values = {name: float(metrics[name]) for name in sorted(names) if name in metrics}
        values["epoch"] = self.current_epoch  # as Lightning adds to the rows it logs
        for logger in self.trainer.loggers:
            logger.log_metrics(values, step=self.global_step)

    def _validation_names(self) -> set[str]:
        names: Any = self.__dict__.get("_logged_by_validation")
        if names is None:
            names = self._logged_by_validation = set()
        return names
