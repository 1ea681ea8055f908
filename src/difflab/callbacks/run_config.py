"""Store the run's resolved config inside every checkpoint, so sampling needs no other input."""

from __future__ import annotations

from typing import Any

import lightning as L

from ..checkpoint_file import CONFIG_KEY


class StoreRunConfig(L.Callback):
    """Adds the resolved config (a plain dict) to each checkpoint under `difflab_config`."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config
