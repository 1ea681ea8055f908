"""Training callbacks: sample grids, FID-style metrics and checkpoints logged during training."""

from .fid import FIDCallback
from .model_checkpoint import Checkpoint
from .reconstruction_grid import ReconstructionGrid
from .run_config import CONFIG_KEY, StoreRunConfig
from .sample_grid import SampleGrid

__all__ = ["CONFIG_KEY", "Checkpoint", "FIDCallback", "ReconstructionGrid", "SampleGrid", "StoreRunConfig"]
