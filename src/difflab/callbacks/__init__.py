"""Training callbacks: sample grids, FID-style metrics and checkpoints logged during training."""

from .checkpoint import Checkpoint
from .fid import FIDCallback
from .run_config import CONFIG_KEY, StoreRunConfig
from .sample_grid import SampleGrid

__all__ = ["CONFIG_KEY", "Checkpoint", "FIDCallback", "SampleGrid", "StoreRunConfig"]
