"""Training callbacks: sample grids (and, later, metrics) logged during training."""

from .checkpoint import Checkpoint
from .run_config import CONFIG_KEY, StoreRunConfig
from .sample_grid import SampleGrid

__all__ = ["CONFIG_KEY", "Checkpoint", "SampleGrid", "StoreRunConfig"]
