"""Validation metrics logged at the step their weights have: after N optimizer steps, at N, as the FID callback's
scores of the same weights and the checkpoint named after them. Lightning logs a validation that runs inside a
training step at that step's 0-based index (N-1), so W&B and metrics.jsonl drew val/loss one step before val/fd."""

from __future__ import annotations

import lightning as L
from torch import Tensor


class ValidationLoggedAtItsStep(L.LightningModule):
    """A LightningModule base whose `log_validation` values reach the loggers once per validation, at the global
    step (averaged over batches and ranks as `self.log(sync_dist=True)` does; also on the progress bar)."""

    def on_validation_start(self) -> None:
        # The names this validation logs: callback_metrics keeps an earlier validation's values too.
        self._logged_by_validation: set[str] = set()

    def log_validation(self, values: dict[str, Tensor], batch_size: int, prog_bar: bool = False) -> None:
        self.log_dict(values, prog_bar=prog_bar, sync_dist=True, batch_size=batch_size, logger=False)
        self._logged_by_validation.update(values)

    def on_validation_end(self) -> None:
        names = self._logged_by_validation
        if self.trainer.sanity_checking or not names:
            return
        metrics = self.trainer.callback_metrics
        values = {name: float(metrics[name]) for name in sorted(names) if name in metrics}
        # As Lightning adds to the rows it logs.
        values["epoch"] = self.current_epoch
        for logger in self.trainer.loggers:
            logger.log_metrics(values, step=self.global_step)
