"""Lightning glue: the training module, EMA, learning-rate schedules, per-step seeding, checkpoint writing,
the metrics file, non-finite checks, preemption and failures."""

from .atomic_checkpoint_io import AtomicCheckpointIO, with_atomic_checkpoints
from .autoencoder_module import AutoencoderModule
from .ema import EMA, ema_network
from .failure_checkpoint import CheckpointOnFailure
from .finite import NonFiniteError
from .lr_schedules import linear_warmup, warmup_cosine
from .module import DiffusionModule
from .phema_callback import PostHocEMA
from .preemption import CheckpointOnSignal, Preempted
from .step_seeding import SeedEachStep

__all__ = [
    "EMA",
    "AtomicCheckpointIO",
    "AutoencoderModule",
    "CheckpointOnFailure",
    "CheckpointOnSignal",
    "DiffusionModule",
    "NonFiniteError",
    "PostHocEMA",
    "Preempted",
    "SeedEachStep",
    "ema_network",
    "linear_warmup",
    "warmup_cosine",
    "with_atomic_checkpoints",
]
