"""Lightning glue: the training module, EMA and learning-rate schedules."""

from .ema import EMA, ema_network
from .lr_schedules import linear_warmup, warmup_cosine
from .module import DiffusionModule

__all__ = ["EMA", "DiffusionModule", "ema_network", "linear_warmup", "warmup_cosine"]
